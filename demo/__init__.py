"""A small Hindi Conformer-CTC trained here on synthetic speech: the offline default model and the yardstick
for what random weights cannot judge (word times, confidence, long-audio cuts, decoders). See MODEL_CARD.md."""
