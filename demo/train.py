"""python -m demo.train: train the demo model on synthetic Hindi speech, on the CPU, seeded.

    text (demo/text.py) -> speech (espeak-ng, varied voice/speed/pitch/pauses; demo/speech.py), cached
    -> batches of similar length, augmented on the fly (noise, telephone band, reverb, gain; demo/augment.py)
    -> NeMo's EncDecCTCModel (demo/config.yaml) in a plain PyTorch loop -> demo/<name>.nemo

A plain loop rather than Lightning's: on two cores it is simpler to keep busy, and it needs no trainer,
manifests or data-loader configs. The model class, its front end, SpecAugment and CTC loss are NeMo's own.
Progress (loss, learning rate, audio seen, dev-set CER, time left) goes to stderr; a checkpoint every
--save-every steps lets an interrupted run resume (--resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from demo import augment as aug
from demo.metrics import cer
from demo.speech import RATE, VARIANTS, Voice, speak, trim
from demo.text import HELDOUT_FILE, alphabet, read_heldout, training_and_heldout

HERE = Path(__file__).parent
CONFIG = HERE / "config.yaml"


def log(message: str) -> None:
    print(f"[demo] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- speech ---


def _voice(rng: random.Random) -> Voice:
    return Voice(
        variant=rng.choice(VARIANTS),
        speed=rng.randint(115, 230),
        pitch=rng.randint(15, 85),
        word_gap=0 if rng.random() < 0.6 else rng.randint(1, 40),
    )


def _synthesize(job: tuple[int, str, int]) -> npt.NDArray[np.int16]:
    """One training utterance: the sentence in a random voice, sometimes with a long pause inside it."""
    _index, text, seed = job
    rng = random.Random(seed)
    voice = _voice(rng)
    words = text.split()
    if len(words) >= 4 and rng.random() < 0.25:  # a pause of 0.15-1.0 s at a word boundary
        cut = rng.randint(1, len(words) - 1)
        pause = np.zeros(int(rng.uniform(0.15, 1.0) * RATE), np.float32)
        audio = np.concatenate(
            [trim(speak(" ".join(words[:cut]), voice)), pause, trim(speak(" ".join(words[cut:]), voice))]
        )
    else:
        audio = trim(speak(text, voice))
    lead, tail = (np.zeros(int(rng.uniform(0.05, 0.5) * RATE), np.float32) for _ in range(2))
    audio = np.concatenate([lead, audio, tail])
    return np.asarray(np.round(np.clip(audio, -1, 1) * 32767), dtype=np.int16)


def speaking_jobs(texts: Sequence[str], seed: int) -> list[tuple[int, str, int]]:
    """Each utterance's job for _synthesize: its own seed picks its voice and pauses (the corpus is the same audio
    whenever it is spoken again with the same seed)."""
    return [(i, t, seed * 1_000_003 + i) for i, t in enumerate(texts)]


@dataclass
class Corpus:
    texts: list[str]
    audio: npt.NDArray[np.int16]  # every utterance, one after another
    offsets: npt.NDArray[np.int64]  # utterance i is audio[offsets[i]:offsets[i+1]]

    def __len__(self) -> int:
        return len(self.texts)

    def samples(self, i: int) -> npt.NDArray[np.float32]:
        return self.audio[self.offsets[i] : self.offsets[i + 1]].astype(np.float32) / 32768.0

    def seconds(self) -> npt.NDArray[np.float64]:
        return np.diff(self.offsets) / RATE

    @classmethod
    def build(cls, texts: Sequence[str], seed: int, cache: Path, processes: int) -> Corpus:
        if cache.is_file():
            data = np.load(cache)
            if list(data["texts"]) == list(texts):
                log(f"speech cache {cache}: {len(texts)} utterances, {data['audio'].size / RATE / 3600:.1f} h")
                return cls(list(texts), data["audio"], data["offsets"])
        log(f"speaking {len(texts)} sentences with espeak-ng ({processes} processes)")
        jobs = speaking_jobs(texts, seed)
        parts: list[npt.NDArray[np.int16]] = []
        started = time.monotonic()
        with Pool(processes) as pool:
            for i, part in enumerate(pool.imap(_synthesize, jobs, chunksize=64), 1):
                parts.append(part)
                if i % 2000 == 0 or i == len(jobs):
                    hours = sum(p.size for p in parts) / RATE / 3600
                    log(f"  {i}/{len(jobs)} utterances, {hours:.1f} h of speech, {time.monotonic() - started:.0f} s")
        offsets = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
        corpus = cls(list(texts), np.concatenate(parts), offsets)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, texts=np.array(texts), audio=corpus.audio, offsets=offsets)
        return corpus


# --------------------------------------------------------------------------------------------- batches ---


def make_batches(seconds: npt.NDArray[np.float64], max_batch_s: float, max_items: int) -> list[list[int]]:
    """Utterances of similar length together (little padding), at most max_batch_s of padded audio each."""
    order = np.argsort(seconds, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(seconds[i], seconds[current[-1]] if current else 0.0)
        if current and (longest * (len(current) + 1) > max_batch_s or len(current) >= max_items):
            batches.append(current)
            current = []
        current.append(int(i))
    if current:
        batches.append(current)
    return batches


class Batches:
    """Map-style dataset whose items are whole augmented batches; item k of epoch e is seeded by (seed, e, k),
    so a run is reproducible whatever the worker timing."""

    def __init__(self, corpus: Corpus, batches: list[list[int]], labels: list[str], seed: int) -> None:
        self.corpus, self.batches, self.seed = corpus, batches, seed
        self.index = {c: i for i, c in enumerate(labels)}
        self.epoch = 0
        self.order = list(range(len(batches)))
        # a pool of utterances to make babble from
        pool_rng = np.random.default_rng(seed)
        self.voices = [corpus.samples(int(i)) for i in pool_rng.choice(len(corpus), size=64, replace=False)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if epoch == 0:  # shortest first (SortaGrad): CTC leaves its all-blank start sooner
            self.order = list(range(len(self.batches)))
        else:
            self.order = list(range(len(self.batches)))
            random.Random(self.seed * 7919 + epoch).shuffle(self.order)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[Any, ...]:
        import torch

        members = self.batches[self.order[k]]
        rng = np.random.default_rng([self.seed, self.epoch, k])
        audios: list[npt.NDArray[np.float32]] = []
        targets: list[list[int]] = []
        for i in members:
            if rng.random() < 0.04:  # nothing to say: the model must learn to write nothing
                audios.append(aug.non_speech(self.corpus.seconds()[i], rng, self.voices))
                targets.append([])
                continue
            audios.append(aug.augment(self.corpus.samples(i), rng, self.voices))
            targets.append([self.index[c] for c in self.corpus.texts[i] if c in self.index])
        lengths = [a.size for a in audios]
        audio = np.zeros((len(audios), max(lengths)), np.float32)
        for j, a in enumerate(audios):
            audio[j, : a.size] = a
        tlen = [len(t) for t in targets]
        target = np.zeros((len(targets), max(1, *tlen)), np.int64)
        for j, t in enumerate(targets):
            target[j, : len(t)] = t
        return (
            torch.from_numpy(audio),
            torch.tensor(lengths, dtype=torch.int64),
            torch.from_numpy(target),
            torch.tensor(tlen, dtype=torch.int64),
        )


# -------------------------------------------------------------------------------------------- training ---


def build_model(labels: list[str]) -> Any:
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    spec = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    cfg = spec["model"]
    cfg["labels"] = labels
    cfg["decoder"]["vocabulary"] = labels
    cfg["decoder"]["num_classes"] = len(labels)
    cfg["language"] = spec["language"]  # read back by the export (`_language_of`)
    cfg["demo_notice"] = spec["demo_notice"]  # the export writes it into the manifest; the service shows it
    return EncDecCTCModel(cfg=OmegaConf.create(cfg))


def greedy_texts(model: Any, audios: Sequence[npt.NDArray[np.float32]], batch: int = 16) -> list[str]:
    """NeMo's forward + greedy CTC over the model's labels (what transcribe() returns for a char model)."""
    import torch

    labels = list(model.decoder.vocabulary)
    blank = len(labels)
    out: list[str] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(audios), batch):
            chunk = audios[start : start + batch]
            lengths = torch.tensor([a.size for a in chunk])
            x = torch.zeros(len(chunk), int(lengths.max()))
            for j, a in enumerate(chunk):
                x[j, : a.size] = torch.from_numpy(a)
            logprobs, enc_len, _ = model.forward(input_signal=x, input_signal_length=lengths)
            ids = logprobs.argmax(-1)
            for j in range(len(chunk)):
                seq = ids[j, : int(enc_len[j])].tolist()
                collapsed = [t for k, t in enumerate(seq) if t != blank and (k == 0 or t != seq[k - 1])]
                out.append(" ".join("".join(labels[t] for t in collapsed).split()))
    return out


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(args: argparse.Namespace) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    train_texts, heldout = training_and_heldout(args.sentences, args.heldout, args.seed)
    if args.write_heldout:
        HELDOUT_FILE.write_text("\n".join(heldout) + "\n", encoding="utf-8")
        log(f"wrote {len(heldout)} held-out sentences to {HELDOUT_FILE}")
    elif not HELDOUT_FILE.is_file() or read_heldout() != heldout:
        log(f"note: {HELDOUT_FILE} differs from this run's held-out sentences (--write-heldout renews it)")
    labels = alphabet(train_texts)
    log(f"{len(train_texts)} training sentences, {len(heldout)} held out, {len(labels)} labels")

    corpus = Corpus.build(train_texts, args.seed, workdir / f"speech-{args.seed}-{args.sentences}.npz", args.threads)
    hours = corpus.audio.size / RATE / 3600
    batches = make_batches(corpus.seconds(), args.batch_s, args.batch_items)
    log(f"{hours:.1f} h of speech in {len(batches)} batches (≤ {args.batch_s:g} s of padded audio each)")
    dataset = Batches(corpus, batches, labels, args.seed)
    dev_texts = heldout[: args.dev]
    dev_audio = [speak(t) for t in dev_texts]  # the plain voice at 150 words a minute, as the tests speak

    model = build_model(labels)
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {params / 1e6:.2f} M parameters")
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=1e-3)
    state_file = workdir / "state.pt"
    step, epoch, seen_s, history = 0, 0, 0.0, []
    if args.resume and state_file.is_file():
        state = torch.load(state_file, weights_only=False)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step, epoch, seen_s, history = state["step"], state["epoch"], state["seen_s"], state["history"]
        log(f"resumed at step {step} (epoch {epoch})")

    from torch.utils.data import DataLoader

    loss_avg, t_last = None, time.monotonic()
    while step < args.steps:
        dataset.set_epoch(epoch)
        skip = step - sum(len(batches) for _ in range(epoch)) if args.resume else 0
        indices = list(range(max(0, skip), len(dataset)))
        loader: Any = DataLoader(
            torch.utils.data.Subset(dataset, indices),  # type: ignore[arg-type]
            batch_size=None,
            num_workers=1,
            prefetch_factor=4,
            worker_init_fn=lambda _: torch.set_num_threads(1),
        )
        model.train()
        for audio, lengths, target, tlen in loader:
            for group in optim.param_groups:
                group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
            logprobs, enc_len, _ = model.forward(input_signal=audio, input_signal_length=lengths)
            loss = model.loss(log_probs=logprobs, targets=target, input_lengths=enc_len, target_lengths=tlen)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            step += 1
            seen_s += float(lengths.sum()) / RATE
            value = float(loss)
            loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
            if step % args.log_every == 0:
                elapsed = time.monotonic() - started
                rate = args.log_every / (time.monotonic() - t_last)
                t_last = time.monotonic()
                left = (args.steps - step) / max(rate, 1e-9)
                log(
                    f"step {step}/{args.steps} epoch {epoch} loss {loss_avg:.3f} "
                    f"lr {lr_at(step, args.steps, args.lr, args.warmup):.2e} "
                    f"audio seen {seen_s / 3600:.1f} h, {elapsed / 60:.1f} min, ~{left / 60:.0f} min left"
                )
            if step % args.eval_every == 0 or step == args.steps:
                dev_cer = cer(dev_texts, greedy_texts(model, dev_audio))
                history.append(
                    {"step": step, "loss": loss_avg, "dev_cer": dev_cer, "minutes": (time.monotonic() - started) / 60}
                )
                log(f"step {step}: dev CER {dev_cer:.2%} on {len(dev_texts)} held-out sentences")
                model.train()
            if step % args.save_every == 0:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optim": optim.state_dict(),
                        "step": step,
                        "epoch": epoch,
                        "seen_s": seen_s,
                        "history": history,
                    },
                    state_file,
                )
            if step >= args.steps:
                break
        else:
            epoch += 1
            continue
        break

    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(args.out))
    summary = {
        "name": yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["name"],
        "parameters": params,
        "labels": len(labels),
        "training_sentences": len(train_texts),
        "training_hours": round(hours, 2),
        "steps": step,
        "epochs": round(seen_s / (corpus.audio.size / RATE), 2),
        "audio_seen_hours": round(seen_s / 3600, 1),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "threads": args.threads,
        "seed": args.seed,
        "history": history,
        "checkpoint_mb": round(args.out.stat().st_size / 1e6, 2),
        "utterance_seconds": utterance_seconds(corpus.seconds()),
    }
    (workdir / "training.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    log(f"saved {args.out} ({summary['checkpoint_mb']} MB) after {summary['minutes']} min")
    return Path(args.out)


def utterance_seconds(seconds: npt.NDArray[np.float64]) -> dict[str, float]:
    """How long the training utterances are (what the export records as the model's training durations: the
    service shapes the segments of long audio like the median one)."""
    return {
        "min": round(float(seconds.min()), 2),
        "median": round(float(np.median(seconds)), 2),
        "p99": round(float(np.percentile(seconds, 99)), 2),
        "max": round(float(seconds.max()), 2),
    }


def _length(job: tuple[int, str, int]) -> int:
    return int(_synthesize(job).shape[0])


def record_utterance_seconds(args: argparse.Namespace, summary: Path = HERE / "training.json") -> None:
    """Speak the training corpus again (speaking_jobs: the same seed gives the same audio) and write
    its utterance lengths into the checkpoint's training summary, without training or keeping the audio."""
    train_texts, _ = training_and_heldout(args.sentences, args.heldout, args.seed)
    jobs = speaking_jobs(train_texts, args.seed)
    with Pool(args.threads) as pool:
        lengths = np.array(pool.map(_length, jobs, chunksize=64), dtype=np.float64)
    figures = utterance_seconds(lengths / RATE)
    recorded = json.loads(summary.read_text(encoding="utf-8"))
    recorded["utterance_seconds"] = figures
    summary.write_text(json.dumps(recorded, indent=1, ensure_ascii=False), encoding="utf-8")
    log(f"{summary}: {len(jobs)} utterances, {lengths.sum() / RATE / 3600:.2f} h, utterance_seconds {figures}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    spec = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    p = argparse.ArgumentParser(prog="python -m demo.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("build/demo"), help="speech cache and resumable state")
    p.add_argument("--out", type=Path, default=HERE / f"{spec['name']}.nemo")
    p.add_argument("--sentences", type=int, default=20000, help="training sentences")
    p.add_argument("--heldout", type=int, default=300, help="held-out sentences (written with --write-heldout)")
    p.add_argument("--write-heldout", action="store_true", help=f"renew {HELDOUT_FILE.name}")
    p.add_argument("--dev", type=int, default=48, help="held-out sentences scored during training")
    p.add_argument("--steps", type=int, default=3500)  # the checkpoint's run (demo/training.json)
    p.add_argument("--batch-s", type=float, default=64.0, help="seconds of padded audio per batch")
    p.add_argument("--batch-items", type=int, default=24)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--record-durations", action="store_true", help="only speak the corpus and record its lengths in training.json"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    from export.__main__ import quiet_nemo

    if args.record_durations:
        record_utterance_seconds(args)
        return 0
    quiet_nemo()
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
