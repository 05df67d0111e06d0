"""Hindi text made on this machine: sentences from a small hand-written grammar and from Hindi word lists
(hunspell-hi's dictionary and Faker's hi_IN names and places), split into training and held-out sets.

Held out twice over: a fixed share of the dictionary's words never appears in training text (chosen by a hash
of the word, so the split does not depend on the order of the list), and no held-out sentence is a training
sentence. The held-out sentences are written to heldout.txt, which the tests read.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HUNSPELL_DIC = Path("/usr/share/hunspell/hi_IN.dic")
HERE = Path(__file__).parent
HELDOUT_FILE = HERE / "heldout.txt"
HELDOUT_SHARE = 0.08  # of the dictionary's words, never seen in training

# A small grammar of everyday Hindi: the words and frames most sentences are built from.
SUBJECTS = [
    "मैं",
    "हम",
    "आप",
    "तुम",
    "वह",
    "वे",
    "यह",
    "मेरा भाई",
    "मेरी बहन",
    "हमारे दोस्त",
    "बच्चे",
    "किसान",
    "डॉक्टर",
    "शिक्षक",
    "मेरी माँ",
    "उसके पिता",
    "सरकार",
    "लोग",
    "छात्र",
    "दुकानदार",
]
TIMES = [
    "आज",
    "कल",
    "परसों",
    "अभी",
    "सुबह",
    "शाम को",
    "रात को",
    "हर दिन",
    "कभी कभी",
    "पिछले साल",
    "अगले हफ्ते",
    "दोपहर में",
    "जल्दी",
    "देर से",
    "सोमवार को",
    "रविवार को",
]
PLACES = [
    "घर",
    "बाज़ार",
    "स्कूल",
    "दफ़्तर",
    "अस्पताल",
    "गाँव",
    "शहर",
    "खेत",
    "मंदिर",
    "स्टेशन",
    "नदी",
    "पहाड़",
    "बगीचे",
    "कमरे",
    "रसोई",
    "सड़क",
    "दुकान",
    "पुस्तकालय",
]
OBJECTS = [
    "खाना",
    "पानी",
    "किताब",
    "चिट्ठी",
    "कपड़े",
    "फल",
    "सब्ज़ी",
    "दवा",
    "गाड़ी",
    "टिकट",
    "चाय",
    "दूध",
    "रोटी",
    "अख़बार",
    "फ़ोन",
    "पैसे",
    "कहानी",
    "गाना",
    "काम",
    "सवाल",
]
VERBS = [
    "लाता है",
    "खाते हैं",
    "पढ़ती है",
    "लिखते हैं",
    "देखा",
    "खरीदेंगे",
    "बेचता है",
    "बनाती है",
    "सुनते हैं",
    "भेजा",
    "ढूँढ रहे हैं",
    "पसंद करते हैं",
    "माँगा",
    "दिया",
    "ले जाएँगे",
    "साफ़ करती है",
    "रखा",
    "भूल गए",
]
INTRANSITIVE = [
    "गया",
    "गई",
    "जाते हैं",
    "आएगा",
    "रहता है",
    "सो रहे हैं",
    "हँसी",
    "दौड़ता है",
    "बैठे हैं",
    "रुक गए",
    "खेलते हैं",
    "पहुँचे",
    "लौट आई",
    "काम करता है",
]
ADJECTIVES = [
    "बड़ा",
    "छोटा",
    "सुंदर",
    "नया",
    "पुराना",
    "अच्छा",
    "लंबा",
    "गरम",
    "ठंडा",
    "मीठा",
    "ताज़ा",
    "साफ़",
    "भारी",
    "हल्का",
    "ऊँचा",
    "गहरा",
]
ADVERBS = ["बहुत", "थोड़ा", "काफ़ी", "ज़्यादा", "कम", "धीरे धीरे", "तेज़ी से", "ध्यान से", "हमेशा"]
CONNECTIVES = ["और", "लेकिन", "क्योंकि", "इसलिए", "फिर", "जब", "तो", "या"]
POSTPOSITIONS = ["में", "से", "को", "पर", "तक", "के साथ", "के पास", "के लिए", "के बाद", "के सामने"]
NUMBERS = ["एक", "दो", "तीन", "चार", "पाँच", "छह", "सात", "आठ", "नौ", "दस", "बीस", "सौ", "हज़ार"]
GRAMMAR_WORDS = sorted(
    {
        w
        for group in (
            SUBJECTS,
            TIMES,
            PLACES,
            OBJECTS,
            VERBS,
            INTRANSITIVE,
            ADJECTIVES,
            ADVERBS,
            CONNECTIVES,
            POSTPOSITIONS,
            NUMBERS,
        )
        for phrase in group
        for w in phrase.split()
    }
)


def normalize(text: str) -> str:
    """NFC (which also splits the precomposed nukta letters क़ ... य़ into letter + nukta), Devanagari and
    single spaces only: exactly the characters the model is trained to write."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(c if is_devanagari(c) else " " for c in text)
    return " ".join(kept.split())


def is_devanagari(c: str) -> bool:
    # letters, signs and the nukta of the Devanagari block; not the danda, digits or the abbreviation sign
    return 0x0900 <= ord(c) <= 0x094F or c in "\u0950\u0951\u0952"


def _clean_words(words: Sequence[str]) -> list[str]:
    out = set()
    for word in words:
        w = normalize(word)
        if w and " " not in w and len(w) <= 14:
            out.add(w)
    return sorted(out)


def dictionary_words() -> list[str]:
    """hunspell-hi's word list (Debian package hunspell-hi), affix flags stripped."""
    if not HUNSPELL_DIC.is_file():
        raise FileNotFoundError(f"{HUNSPELL_DIC} is missing: install the Debian package hunspell-hi")
    lines = HUNSPELL_DIC.read_text(encoding="utf-8").splitlines()[1:]
    return _clean_words([line.split("/")[0] for line in lines])


def faker_words() -> tuple[list[str], list[str]]:
    """(people's names, places) of Faker's hi_IN locale."""
    from faker.providers.address.hi_IN import Provider as Address
    from faker.providers.person.hi_IN import Provider as Person

    names = [*Person.first_names, *Person.last_names]
    places = [*Address.cities, *Address.states]
    countries = getattr(Address, "countries", ())
    return _clean_words(names), _clean_words([*places, *countries])


def held_out(word: str) -> bool:
    digest = hashlib.sha256(word.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELDOUT_SHARE


@dataclass(frozen=True)
class Lexicon:
    words: list[str]  # dictionary words
    names: list[str]
    places: list[str]

    @classmethod
    def load(cls) -> Lexicon:
        names, places = faker_words()
        return cls(dictionary_words(), names, places)

    def split(self) -> tuple[Lexicon, Lexicon]:
        """(training lexicon, held-out lexicon); grammar words are shared, content words are not."""

        def part(keep: bool, items: list[str]) -> list[str]:
            return [w for w in items if held_out(w) != keep and w not in GRAMMAR_WORDS]

        return (
            Lexicon(part(True, self.words), part(True, self.names), part(True, self.places)),
            Lexicon(part(False, self.words), part(False, self.names), part(False, self.places)),
        )


class SentenceMaker:
    """Seeded sentences: grammatical frames filled with the lexicon's names and places, and free sequences of
    dictionary words (for coverage of the written language's letters and clusters)."""

    def __init__(self, lexicon: Lexicon, seed: int) -> None:
        self.lex, self.rng = lexicon, random.Random(seed)

    def _pick(self, items: Sequence[str]) -> str:
        return self.rng.choice(items)

    def _noun(self) -> str:
        r = self.rng.random()
        if r < 0.25 and self.lex.names:
            return self._pick(self.lex.names)
        if r < 0.4 and self.lex.places:
            return self._pick(self.lex.places)
        if r < 0.7:
            return self._pick(self.lex.words)
        return self._pick(OBJECTS)

    def framed(self) -> str:
        c = self.rng.randrange(6)
        name = self._pick(self.lex.names) if self.lex.names else self._pick(SUBJECTS)
        place = self._pick(self.lex.places) if self.lex.places and self.rng.random() < 0.5 else self._pick(PLACES)
        if c == 0:
            parts = [self._pick(SUBJECTS), self._pick(TIMES), place, "में", self._noun(), self._pick(VERBS)]
        elif c == 1:
            parts = [name, self._pick(TIMES), place, self._pick(["से", "तक", "के पास"]), self._pick(INTRANSITIVE)]
        elif c == 2:
            parts = [place, "में", self._pick(NUMBERS), self._pick(ADJECTIVES), self._noun(), "हैं"]
        elif c == 3:
            parts = [name, "ने", self._noun(), self._pick(POSTPOSITIONS), self._pick(ADVERBS), self._pick(VERBS)]
        elif c == 4:
            parts = [
                self._pick(SUBJECTS),
                self._pick(OBJECTS),
                self._pick(VERBS),
                self._pick(CONNECTIVES),
                name,
                self._pick(INTRANSITIVE),
            ]
        else:
            parts = [self._noun(), self._pick(POSTPOSITIONS), self._noun(), self._pick(ADJECTIVES), "है"]
        return " ".join(parts)

    def free(self, low: int = 3, high: int = 12) -> str:
        words = [
            self._noun() if self.rng.random() < 0.8 else self._pick(GRAMMAR_WORDS)
            for _ in range(self.rng.randint(low, high))
        ]
        return " ".join(words)

    def sentence(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            text = self.framed()
        elif r < 0.8:
            text = self.free()
        else:  # two clauses: longer utterances
            text = f"{self.framed()} {self._pick(CONNECTIVES)} {self.framed()}"
        return normalize(text)

    def sentences(self, count: int, exclude: set[str] = frozenset()) -> Iterator[str]:  # type: ignore[assignment]
        seen = set(exclude)
        made = 0
        while made < count:
            s = self.sentence()
            if s in seen:
                continue
            seen.add(s)
            made += 1
            yield s


def training_and_heldout(train_count: int, heldout_count: int, seed: int) -> tuple[list[str], list[str]]:
    """Training sentences (training lexicon) and held-out sentences (held-out lexicon: every free word and
    name in them is unseen in training), no sentence in both."""
    train_lex, heldout_lex = Lexicon.load().split()
    train = list(SentenceMaker(train_lex, seed).sentences(train_count))
    heldout = list(SentenceMaker(heldout_lex, seed + 1).sentences(heldout_count, exclude=set(train)))
    return train, heldout


def alphabet(texts: Sequence[str]) -> list[str]:
    """The model's labels: every character of the texts (space included), in code point order."""
    return sorted(set("".join(texts)) | {" "})


def read_heldout(path: Path = HELDOUT_FILE) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
