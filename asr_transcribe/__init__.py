"""asr-transcribe: whole folders of recordings through the service, from the command line.

inputs.py finds the audio files and names their outputs, ledger.py remembers what is done (so a rerun picks up
where the last one stopped), runner.py sends the files through BentoML's client with a bounded number in flight
and counts what happened; __main__.py is the command. Nothing here imports the service: this is a client.
"""
