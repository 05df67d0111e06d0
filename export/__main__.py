"""python -m export (--pretrained [NAME] | --nemo PATH | --config NAME|PATH) [options]

Turns a NeMo CTC model into one verified ONNX graph and registers it in the BentoML model store
($BENTOML_HOME). Prints the store tag as its last line; exits non-zero (one line on stderr) on failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from export.sources import DEFAULT_PRETRAINED


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[1])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pretrained",
        nargs="?",
        const=DEFAULT_PRETRAINED,
        metavar="NAME",
        help=f"download through NeMo's from_pretrained (default {DEFAULT_PRETRAINED})",
    )
    source.add_argument("--nemo", type=Path, metavar="PATH", help="a local .nemo file (EncDecCTCModel[BPE])")
    source.add_argument(
        "--config",
        metavar="NAME|PATH",
        help="build a random-weight model from a config in export/configs (tiny, medium, ...)",
    )
    parser.add_argument("--name", help="store name (default: the model's name)")
    parser.add_argument("--language", help="ISO 639-1 code to record (default: from the model or config)")
    parser.add_argument(
        "--max-segment-s", type=float, help="raise the encoder's position table so that segments this long fit"
    )
    parser.add_argument(
        "--train-max-s",
        type=float,
        metavar="S",
        help="the longest utterance the model was trained on, where neither its config (train_ds.max_duration) "
        "nor a training.json beside the .nemo says it: the service keeps long audio's segments within it",
    )
    parser.add_argument(
        "--verify-audio", type=Path, nargs="+", default=[], help="extra audio files for the parity check against NeMo"
    )
    parser.add_argument("--variants", default="", help="comma-separated: optimized,int8,fp16")
    parser.add_argument(
        "--lm", type=Path, metavar="PATH", help="a KenLM n-gram model (ARPA or binary) for beam search, packed with it"
    )
    parser.add_argument("--lm-alpha", type=float, default=0.5, help="LM weight in beam search (default 0.5)")
    parser.add_argument("--lm-beta", type=float, default=1.0, help="bonus per word in beam search (default 1.0)")
    parser.add_argument("--lm-note", default="", help="where the LM came from (recorded in the manifest)")
    parser.add_argument("--beam-width", type=int, default=16, help="the model's default beam width (default 16)")
    parser.add_argument("--output", type=Path, help="also keep the artifact (model.onnx, manifest.json) here")
    parser.add_argument("--no-register", action="store_true", help="verify and write files only")
    parser.add_argument(
        "--no-streaming", action="store_true", help="no streaming graphs (the store entry is then half the size)"
    )
    parser.add_argument(
        "--no-itn", action="store_true", help="no written-form (ITN) grammars, even where the language has them"
    )
    parser.add_argument("--verbose", action="store_true", help="show NeMo's own logging")
    return parser.parse_args(argv)


def quiet_nemo() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    from export.sources import quiet_fds

    sys.stdout.flush()
    with quiet_fds(1, 2):  # NeMo's telemetry prints banners at import
        import nemo.collections.asr  # noqa: F401
        from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from export.describe import UnsupportedModel
    from export.frontend import UnsupportedFrontEnd
    from export.pipeline import DecoderOptions, LMError, Options, run
    from export.progress import progress
    from export.sources import SourceError, from_config, from_nemo, from_pretrained
    from export.store import StoreNameError, checked_name
    from export.streaming import StreamingExportError
    from export.variants import KINDS
    from export.verify import ParityError

    if args.name:
        try:
            checked_name(args.name, given=True)  # refused before anything is loaded
        except StoreNameError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.lm is not None and not args.lm.is_file():
        print(f"error: --lm {args.lm}: no such file", file=sys.stderr)
        return 2
    if not 1 <= args.beam_width <= 512:
        print("error: --beam-width must be 1 to 512", file=sys.stderr)
        return 2
    if args.train_max_s is not None and not args.train_max_s > 0:
        print("error: --train-max-s must be above 0", file=sys.stderr)
        return 2
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in KINDS]
    if unknown:
        print(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}", file=sys.stderr)
        return 2
    try:
        progress("loading NeMo")
        if not args.verbose:
            quiet_nemo()
        if args.pretrained:
            progress(f"downloading {args.pretrained} through NeMo")
            loaded = from_pretrained(args.pretrained, args.language)
        elif args.nemo:
            progress(f"restoring {args.nemo}")
            loaded = from_nemo(args.nemo, args.language)
        else:
            progress(f"building a random-weight model from config {args.config}")
            loaded = from_config(args.config, args.language)
        options = Options(
            name=args.name,
            max_segment_s=args.max_segment_s,
            verify_audio=args.verify_audio,
            variants=variants,
            workdir=args.output,
            register=not args.no_register,
            decoder=DecoderOptions(args.lm, args.lm_alpha, args.lm_beta, args.beam_width, args.lm_note),
            streaming=not args.no_streaming,
            train_max_s=args.train_max_s,
            itn=not args.no_itn,
        )
        _manifest, tag, out_dir = run(loaded, options)
    except (
        SourceError,
        ParityError,
        UnsupportedModel,
        UnsupportedFrontEnd,
        StoreNameError,
        LMError,
        StreamingExportError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(tag if tag else str(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
