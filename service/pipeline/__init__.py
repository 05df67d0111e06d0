"""Between the doors (service/api/) and the recognizer: file transcription, stream transcription, turn
detection and the request policy, written against a small recognizer-client protocol (client.py)."""
