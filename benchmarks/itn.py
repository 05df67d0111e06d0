"""The written form (inverse text normalisation) on the demo model: 40 Hindi sentences with numbers, years,
dates, times, money, phone numbers and ordinals (benchmarks/data/itn_hi.tsv: the spoken form, and the written
form a person would type), each spoken word by word by espeak-ng with known gaps, recognised greedily by the demo
model, then written by its store entry's grammars (service/recognition/written.py).

- WER against the written references, without and with ITN (commas removed before scoring: NeMo's grammars
  write "१५ अगस्त, १९४७"); the same for the spoken references through ITN (the grammars alone, perfect hearing).
- Numbers left partly in words ("२ सौ"): NeMo's InverseNormalizer and ours, on the spoken references.
- Word times: each written token made from words the model heard right, against the true start of its first
  spoken word and end of its last; the share within 0.12 s.
- Cost: ITN's seconds per second of audio, and what that adds to recognition at the service's best RTFx (the
  last table of benchmarks/results/throughput.md, medium model).

    python benchmarks/itn.py [--out benchmarks/results/itn.md]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # demo/ is not an installed package
SENTENCES = ROOT / "benchmarks" / "data" / "itn_hi.tsv"
THROUGHPUT = ROOT / "benchmarks" / "results" / "throughput.md"
CHECKPOINT = ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"
TOLERANCE_S = 0.12


def sentences() -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in SENTENCES.read_text(encoding="utf-8").splitlines()]
    return [(r[0], r[1]) for r in rows if r[0] and not r[0].startswith("#")]


def scored(text: str) -> str:
    return " ".join(text.replace(",", " ").split())


def service_rtfx() -> float:
    """The best service RTFx in throughput.md's last table (rows `| clients | bare | service | ratio |`)."""
    tables = THROUGHPUT.read_text(encoding="utf-8").split("### ")
    rows = re.findall(r"^\| \d+ \| [\d.]+ \| ([\d.]+) \|", tables[-1], re.M)
    return max(float(r) for r in rows)


def time_itn(saved: Path, directory: Path) -> dict[str, tuple[float, float, float]]:
    """ITN's seconds per second of audio over the saved transcripts: the first pass (its memory of which words
    are number words empty, as in a fresh server) and the median of 5 later passes."""
    import bentoml  # noqa: F401  (an entry process's heap)

    import service.api.transcribe  # noqa: F401
    from service.manifest import Manifest
    from service.recognition.written import Grammars, Writing

    manifest = Manifest.read(directory)
    assert manifest.itn is not None
    costs = {}
    for name, (transcripts, seconds) in pickle.loads(saved.read_bytes()).items():
        writing = Writing(Grammars.load(directory, manifest.itn))
        began = time.perf_counter()
        for heard in transcripts:
            writing.transcript(heard)
        cold = (time.perf_counter() - began) / seconds
        rounds = []
        for _ in range(5):
            began = time.perf_counter()
            for heard in transcripts:
                writing.transcript(heard)
            rounds.append(time.perf_counter() - began)
        costs[name] = (cold, statistics.median(rounds) / seconds, seconds)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/itn.md"))
    parser.add_argument("--time-itn", nargs=2, type=Path, help=argparse.SUPPRESS)  # the timing child process
    args = parser.parse_args()
    if args.time_itn:
        print(json.dumps(time_itn(*args.time_itn)))
        return 0
    from nemo_text_processing.inverse_text_normalization.inverse_normalize import InverseNormalizer

    from benchmarks.report import publish
    from demo.metrics import align_words, wer
    from demo.speech import speak, spoken_words
    from demo.text import read_heldout
    from export.__main__ import quiet_nemo
    from export.pipeline import Options, run
    from export.sources import from_nemo
    from export.variants import cpu_name
    from service.audio.segment import Segment
    from service.recognition import transcript as tr
    from service.recognition.recognizer import Recognizer
    from service.recognition.tokens import Detokenizer
    from service.recognition.written import _HALF_DONE, Grammars, Writing

    work = Path(tempfile.mkdtemp(prefix="itn-bench-"))
    quiet_nemo()
    manifest, _, directory = run(from_nemo(CHECKPOINT, None), Options(workdir=work, register=False, streaming=False))
    assert manifest.itn is not None, "the export packed no ITN grammars (is nemo_text_processing installed?)"
    engine = Recognizer(Path(directory), manifest, "cpu")
    detok = Detokenizer(manifest.vocabulary, manifest.tokenizer)
    grammars = Grammars.load(Path(directory), manifest.itn)
    writing = Writing(grammars)
    rows = sentences()
    rng = random.Random(7)
    spoken_out, written_out, truths, audio_s = [], [], [], 0.0
    for spoken, _ in rows:
        words = spoken.split()
        audio, spans = spoken_words(words, [rng.uniform(0.05, 0.3) for _ in words[1:]], lead_s=0.3)
        result = engine.infer([audio])[0]
        seconds = audio.shape[0] / manifest.sample_rate
        segment = Segment(0, audio)
        heard = tr.assemble([segment], [result], detok, manifest.frame_shift_s, manifest.sample_rate, seconds)
        spoken_out.append(heard)
        written_out.append(writing.transcript(heard))
        truths.append(spans)
        audio_s += seconds

    refs_written = [scored(w) for _, w in rows]
    refs_spoken = [s for s, _ in rows]
    wer_spoken_heard = wer(refs_spoken, [t.text for t in spoken_out])
    wer_plain = wer(refs_written, [scored(t.text) for t in spoken_out])
    wer_itn = wer(refs_written, [scored(t.text) for t in written_out])
    perfect = [writing.text(s) for s in refs_spoken]
    wer_perfect = wer(refs_written, [scored(p) for p in perfect])
    changed = sum(t.text != t.text_spoken for t in written_out)

    nemo = InverseNormalizer(lang="hi", cache_dir=str(work / "nemo-cache"))
    theirs = [nemo.inverse_normalize(s, verbose=False) for s in refs_spoken]
    half_nemo = sum(bool(_HALF_DONE.search(t)) for t in theirs)
    half_ours = sum(bool(_HALF_DONE.search(t)) for t in perfect)
    same_as_nemo = sum(o == t for o, t in zip(perfect, theirs, strict=True))

    # word times of written tokens whose spoken words the model heard right
    starts, ends = [], []
    for heard, out, spans in zip(spoken_out, written_out, truths, strict=True):
        words = heard.words
        pieces = grammars.rewrite([w.word for w in words])
        truth_of = dict(align_words([s.word for s in spans], [w.word for w in words]))
        by_heard = {j: i for i, j in truth_of.items() if i is not None and j is not None}
        written_words = iter(out.words)
        for piece in pieces:
            word = next(written_words)
            if not piece.rewritten:
                continue
            first, last = by_heard.get(piece.first), by_heard.get(piece.stop - 1)
            right = all(
                by_heard.get(k) is not None and spans[by_heard[k]].word == words[k].word
                for k in range(piece.first, piece.stop)
            )
            if first is None or last is None or not right:
                continue
            starts.append(abs(word.start - spans[first].start))
            ends.append(abs(word.end - spans[last].end))
    within = sum(s <= TOLERANCE_S and e <= TOLERANCE_S for s, e in zip(starts, ends, strict=True))

    # cost: ITN's time per second of audio, with its word memory empty (a fresh server) and full (later passes);
    # on these sentences (a number in each) and on ordinary speech (held-out demo sentences, few numbers)
    ordinary, ordinary_s = [], 0.0
    for sentence in read_heldout()[48:108]:
        audio = speak(sentence)
        result = engine.infer([audio])[0]
        seconds = audio.shape[0] / manifest.sample_rate
        ordinary.append(
            tr.assemble([Segment(0, audio)], [result], detok, manifest.frame_shift_s, manifest.sample_rate, seconds)
        )
        ordinary_s += seconds
    rtfx = service_rtfx()
    # timed in a process of its own that imports what an entry process does (BentoML and the service's API
    # layer), not NeMo and torch: timed in this process (a NeMo model and NeMo's own normaliser loaded) it took
    # ~3x as long
    saved = work / "transcripts.pkl"
    saved.write_bytes(pickle.dumps({"numbers": (spoken_out, audio_s), "ordinary": (ordinary, ordinary_s)}))
    timed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--time-itn", str(saved), str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    costs = json.loads(timed.stdout.strip().splitlines()[-1])

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Written form (ITN) on the demo model",
        "",
        f"`python benchmarks/itn.py`: run {when} on {cpu_name()}. 40 sentences (benchmarks/data/itn_hi.tsv), "
        f"{audio_s:.0f} s of audio spoken word by word by espeak-ng; the demo model's greedy text; grammars: "
        f"{manifest.itn.source}, applied with kaldifst.",
        "",
        "| text scored | against | WER |",
        "|---|---|---|",
        f"| recognised, as spoken | spoken references | {wer_spoken_heard:.1%} |",
        f"| recognised, as spoken | written references | {wer_plain:.1%} |",
        f"| recognised, written form (itn=true) | written references | {wer_itn:.1%} |",
        f"| spoken references, written form (the grammars alone) | written references | {wer_perfect:.1%} |",
        "",
        f"- Sentences whose text ITN changed: {changed} of {len(rows)}.",
        f"- Numbers left partly in words (a digit, then सौ/हज़ार/...): NeMo's InverseNormalizer {half_nemo} of "
        f"{len(rows)} spoken references, ours {half_ours}; ours equals NeMo's text on {same_as_nemo} of {len(rows)}.",
        f"- Word times of written tokens made from correctly heard words: {len(starts)} tokens, {within} with both "
        f"edges within {TOLERANCE_S} s of the spoken span ({within / max(1, len(starts)):.0%}); median edge errors "
        f"{statistics.median(starts) if starts else 0:.3f} s (start), {statistics.median(ends) if ends else 0:.3f} s "
        "(end).",
        "",
        f"Cost, against recognition at the service's best RTFx {rtfx:g} ({1000 / rtfx:.1f} ms per second of audio; "
        "benchmarks/results/throughput.md's last table, medium model, this machine). ITN runs in the entry "
        "process; `first pass`: its memory of which words are number words empty (a fresh server), `later`: "
        "the median of 5 more passes.",
        "",
        "| transcripts | audio | ITN ms per audio s, first pass | later | added to recognition, first | later |",
        "|---|---|---|---|---|---|",
        *(
            f"| {label} | {costs[name][2]:.0f} s | {costs[name][0] * 1000:.2f} | {costs[name][1] * 1000:.2f} | "
            f"{costs[name][0] * rtfx:.1%} | {costs[name][1] * rtfx:.1%} |"
            for name, label in (
                ("numbers", "the 40 sentences above (a number in each)"),
                ("ordinary", "60 held-out demo sentences (ordinary text)"),
            )
        ),
    ]
    return publish(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
