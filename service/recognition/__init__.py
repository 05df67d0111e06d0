"""Stage two: segments through the ONNX graph (recognizer.py; where it runs and with which options, device.py),
greedy CTC (ctc.py; on a GPU finished on the device by greedy_head/), beam search (beam.py), token ids to text
(tokens.py), and the segments' results stitched into one transcript with timed words (transcript.py)."""
