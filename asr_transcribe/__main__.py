"""asr-transcribe PATH... : every recording under the paths through the service, a transcript for each.

    asr-transcribe recordings/ --url http://127.0.0.1:3000 --format srt --out transcripts --concurrency 4

Exit status: 0 when every file was transcribed (or already was), 1 when any failed, 2 when the command could not
run (bad arguments, the service unreachable or refusing the key), 130 when interrupted (what finished is kept;
a rerun goes on)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from asr_transcribe.inputs import FORMATS, InputError, find
from asr_transcribe.ledger import Ledger
from asr_transcribe.runner import Request, Summary, run


def parse(argv: list[str] | None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(prog="asr-transcribe", description=doc[0], epilog=doc[-1])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="audio files and folders (recursive)")
    parser.add_argument("--url", default=os.environ.get("ASR_URL", "http://127.0.0.1:3000"), help="the service")
    parser.add_argument("--token", default=os.environ.get("ASR_API_KEY"), help="API key (default: $ASR_API_KEY)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="txt", help="transcript format (default txt)")
    parser.add_argument("--out", type=Path, default=Path("transcripts"), help="output folder (default ./transcripts)")
    parser.add_argument("--concurrency", type=int, default=4, help="files in flight (default 4)")
    parser.add_argument("--model", default="", help="the served model to use (default: the service's)")
    parser.add_argument("--language", default="", help="pick the served model by language")
    parser.add_argument("--decoding", choices=["default", "greedy", "beam"], default="default")
    parser.add_argument(
        "--hotwords", default="", metavar="'PHRASE[:WEIGHT], ...'", help="phrases to favour (as the API)"
    )
    parser.add_argument("--timestamps", action="store_true", help="word times in json output")
    parser.add_argument(
        "--itn", action="store_true", help="the written form: numbers, dates, money, times as digits (API's itn)"
    )
    parser.add_argument("--itn-digits", choices=["devanagari", "latin"], help="its digits (default: the service's)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one file (default 3600)")
    parser.add_argument("--jobs", action="store_true", help="each file as a job (for hours-long files; resumable)")
    parser.add_argument("--wait-ready", type=float, default=30.0, help="seconds to wait for the service at start")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (none either when not on a terminal)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def report(summary: Summary) -> str:
    lines = [
        f"{summary.files} files: {summary.done} transcribed, {summary.skipped} already done, "
        f"{len(summary.failures)} failed" + (" (interrupted)" if summary.interrupted else "")
    ]
    if summary.done:
        rtfx = summary.audio_s / summary.wall_s if summary.wall_s else 0.0
        lines.append(
            f"{summary.audio_s / 3600:.2f} h of audio in {summary.wall_s:.1f} s (RTFx {rtfx:.1f})"
            if summary.audio_s
            else f"in {summary.wall_s:.1f} s"
        )
    for f in summary.failures:
        lines.append(f"failed: {f.source}: {f.status or '-'} {f.code}: {f.message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        items = find(args.paths, args.format)
        ledger = Ledger(args.out)
    except (InputError, ValueError) as exc:
        print(f"asr-transcribe: {exc}", file=sys.stderr)
        return 2
    fields: dict[str, object] = {}
    if args.timestamps:
        fields["timestamps"] = True
    for name in ("model", "language", "hotwords"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    if args.decoding != "default":
        fields["decoding"] = args.decoding
    if args.itn:
        fields["itn"] = True
    if args.itn_digits:
        fields["itn_digits"] = args.itn_digits
    request = Request(args.url.rstrip("/"), args.token, args.format, fields, args.timeout, args.wait_ready, args.jobs)
    show = not args.quiet and sys.stderr.isatty()
    try:
        summary = asyncio.run(run(items, request, args.out, args.concurrency, ledger, show))
    except Exception as exc:  # the service unreachable, or refusing every call before any work
        print(f"asr-transcribe: {args.url}: {exc}", file=sys.stderr)
        return 2
    print(report(summary), file=sys.stderr)
    if summary.interrupted:
        return 130
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
