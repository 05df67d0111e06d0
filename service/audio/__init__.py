"""Stage one: audio bytes to samples (decode.py, containers.py), and long audio to segments (vad.py, segment.py)."""
