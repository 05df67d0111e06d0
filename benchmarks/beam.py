"""Beam search, n-gram LM and hotwords with the demo model (demo/, the one model here that hears), through
the service over HTTP.

    python benchmarks/beam.py [--sentences 100] [--clients 4]

Exports demo/stt_hi_demo_conformer_ctc.nemo three times into a temporary store (plain, and with a 3-gram LM built
by export/lm.py from 20,000 sentences of the model's training lexicon; and with one of both lexicons, never
the test sentences), serves them, and on the held-out sentences (every free word and name in them is
unseen in training) measures WER for greedy, beam, beam + LM and beam + hotwords; hotword recall and false
alarms; and the throughput of each decoding with --clients concurrent clients. Writes
benchmarks/results/beam.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.evaluate import conditions  # noqa: E402
from demo.metrics import wer  # noqa: E402
from demo.text import read_heldout, training_and_heldout  # noqa: E402
from export.lm import build_arpa  # noqa: E402
from export.variants import cpu_name  # noqa: E402
from tests.audio_files import encode  # noqa: E402
from tests.server import Server  # noqa: E402

PLAIN, WITH_LM, DOMAIN_LM = "stt_hi_demo_conformer_ctc", "stt_hi_demo_lm", "stt_hi_demo_domain_lm"
DISTRACTORS = 10  # hotwords per request that are not in its sentence


async def transcribe(url: str, jobs: list[tuple[bytes, dict[str, str]]], clients: int) -> tuple[list[str], float]:
    """Each job's text from /transcribe (its form fields with it), and the wall time of the whole run."""
    texts = [""] * len(jobs)
    queue = list(enumerate(jobs))

    async def client() -> None:
        async with httpx.AsyncClient(timeout=600) as c:
            while queue:
                i, (wav, fields) = queue.pop()
                r = await c.post(url + "/transcribe", files={"audio": ("a.wav", wav, "audio/wav")}, data=fields)
                r.raise_for_status()
                texts[i] = str(r.json()["text"])

    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    return texts, time.perf_counter() - started


def export_models(work: Path) -> None:
    """The three models into the store at BENTOML_HOME."""
    from demo.text import Lexicon, SentenceMaker
    from export.__main__ import quiet_nemo
    from export.pipeline import DecoderOptions, Options, run
    from export.sources import from_nemo

    train, _ = training_and_heldout(20000, 10, seed=101)  # fresh sentences of the training lexicon
    arpa = work / "train.arpa"
    arpa.write_text(build_arpa([s.split() for s in train], 3), encoding="utf-8")
    # the held-out sentences' domain: new sentences of the held-out lexicon (never a test sentence) + the above
    _, heldout_lex = Lexicon.load().split()
    domain = list(SentenceMaker(heldout_lex, 202).sentences(20000, exclude=set(read_heldout())))
    domain_arpa = work / "domain.arpa"
    domain_arpa.write_text(build_arpa([s.split() for s in domain + train], 3), encoding="utf-8")
    quiet_nemo()
    checkpoint = ROOT / "demo" / "stt_hi_demo_conformer_ctc.nemo"
    run(from_nemo(checkpoint, None), Options(name=PLAIN, workdir=work / "plain"))
    lm = DecoderOptions(arpa, 0.5, 1.0, 16, "3-gram, 20,000 training-lexicon sentences (benchmarks/beam.py)")
    run(from_nemo(checkpoint, None), Options(name=WITH_LM, workdir=work / "lm", decoder=lm))
    lm = DecoderOptions(domain_arpa, 0.5, 1.0, 16, "3-gram, 40,000 sentences of both lexicons (benchmarks/beam.py)")
    run(from_nemo(checkpoint, None), Options(name=DOMAIN_LM, workdir=work / "domain", decoder=lm))


def rare_words(sentences: list[str]) -> list[list[str]]:
    """Each sentence's words the model never saw in training (the held-out lexicon's names and words)."""
    train, _ = training_and_heldout(20000, 10, seed=101)
    seen = {w for s in train for w in s.split()}
    return [[w for w in s.split() if w not in seen] for s in sentences]


def hotword_figures(refs: list[str], hyps: list[str], lists: list[list[str]], spoken: bool) -> tuple[int, int, int]:
    """(hits, of how many spoken hotwords, false alarms): a false alarm is a hotword in the answer more often
    than in the sentence."""
    hits = total = alarms = 0
    for ref, hyp, words in zip(refs, hyps, lists, strict=True):
        r, h = ref.split(), hyp.split()
        for w in set(words):
            said, heard = r.count(w), h.count(w)
            if spoken:
                total += said
                hits += min(said, heard)
            alarms += max(0, heard - said)
    return hits, total, alarms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="asr-beam-"))
    os.environ["BENTOML_HOME"] = str(home)  # before anything opens the store
    sentences = read_heldout()[: args.sentences]
    audio = conditions(sentences)
    rows: list[str] = []
    speed: list[str] = []
    rare = rare_words(sentences)
    pool = sorted({w for words in rare for w in words})
    picker = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_models(work)
        env = {"BENTOML_HOME": str(home), "ASR_MODELS": f"{PLAIN},{WITH_LM},{DOMAIN_LM}", "ASR_DEVICE": "cpu"}
        with Server(env, work / "server.log") as server:
            for condition in ("clean", "10 dB SNR"):
                wavs = [encode(a, 16000) for a in audio[condition]]
                seconds = sum(a.size for a in audio[condition]) / 16000
                # hotwords: each sentence's unseen words plus DISTRACTORS unseen words it does not hold
                lists = [words + picker.sample([w for w in pool if w not in words], DISTRACTORS) for words in rare]
                others = [picker.sample([w for w in pool if w not in s.split()], DISTRACTORS) for s in sentences]
                modes: dict[str, list[dict[str, str]]] = {
                    "greedy": [{"model": PLAIN}] * len(wavs),
                    "beam 16": [{"model": PLAIN, "decoding": "beam"}] * len(wavs),
                    "beam 16 + LM (training lexicon)": [{"model": WITH_LM, "decoding": "beam"}] * len(wavs),
                    "beam 16 + LM (both lexicons)": [{"model": DOMAIN_LM, "decoding": "beam"}] * len(wavs),
                    "beam 16 + hotwords": [{"model": PLAIN, "hotwords": ", ".join(h)} for h in lists],
                    "beam 16 + LM (training lexicon) + hotwords": [
                        {"model": WITH_LM, "hotwords": ", ".join(h)} for h in lists
                    ],
                    "beam 16 + LM (both lexicons) + hotwords": [
                        {"model": DOMAIN_LM, "hotwords": ", ".join(h)} for h in lists
                    ],
                    "beam 16 + hotwords not spoken": [{"model": PLAIN, "hotwords": ", ".join(h)} for h in others],
                }
                asyncio.run(
                    transcribe(server.url, list(zip(wavs[:8], modes["beam 16"][:8], strict=True)), args.clients)
                )
                for mode, fields in modes.items():
                    hyps, wall = asyncio.run(transcribe(server.url, list(zip(wavs, fields, strict=True)), args.clients))
                    hits, total, _ = hotword_figures(sentences, hyps, rare, spoken=True)
                    given = others if mode.endswith("not spoken") else lists if "hotwords" in mode else None
                    alarms = "-" if given is None else str(hotword_figures(sentences, hyps, given, spoken=False)[2])
                    rows.append(
                        f"| {condition} | {mode} | {100 * wer(sentences, hyps):.2f} | "
                        f"{hits}/{total} ({100 * hits / max(1, total):.1f} %) | {alarms} |"
                    )
                    speed.append(f"| {condition} | {mode} | {seconds / wall:.1f} |")
                    print(rows[-1], speed[-1], flush=True)
    shutil.rmtree(home, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / "beam.md"
    out.write_text(
        "# Beam search, n-gram LM and hotwords (benchmarks/beam.py)\n\n"
        f"Demo model through `bentoml serve` on {cpu_name()}; {len(sentences)} held-out sentences (their names "
        "and free words unseen in training). LMs (3-gram, alpha 0.5, beta 1.0, export/lm.py): *training "
        "lexicon*, 20,000 new sentences of the training lexicon (none of the test sentences' unseen words); "
        "*both lexicons*, those + 20,000 new sentences of the held-out lexicon (its words, never a test "
        f"sentence). Hotwords: each sentence's unseen words + {DISTRACTORS} unseen words it does not hold, "
        f"weight 10. {args.clients} clients. The recall column counts the test sentences' unseen words "
        "recognised.\n\n"
        "| audio | decoding | WER % | unseen words recognised | false alarms (hotwords heard, not said) |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "| audio | decoding | RTFx (audio s / wall s, whole run) |\n|---|---|---|\n" + "\n".join(speed) + "\n",
        encoding="utf-8",
    )
    print(out)


if __name__ == "__main__":
    main()
