"""Stage two: segments through the ONNX graph (recognizer.py), greedy CTC (ctc.py), token ids to text (tokens.py), and
the segments' results stitched into one transcript with timed words (transcript.py)."""
