"""The request policy all doors share: which served model a request gets, and how its log-probabilities become
text (greedy, exactly NeMo's, or beam search with hotwords)."""

from __future__ import annotations

from dataclasses import dataclass

from service.catalog import Catalog, ServedModel
from service.errors import BadRequest
from service.recognition.beam import Decoding, HotwordError, parse_hotwords

GREEDY = Decoding()
DECODINGS = ("default", "greedy", "beam")


@dataclass(frozen=True)
class DecodingRules:
    """ASR_DECODING and the hotword limits (service/settings.py)."""

    default: str = "greedy"  # what `decoding=default` (or none) means: greedy or beam
    hotword_weight: float = 10.0
    max_hotwords: int = 100
    max_hotword_words: int = 5


class Policy:
    """The served models and the decoding rules: a request's fields -> the model and decoding it gets."""

    def __init__(self, catalog: Catalog, rules: DecodingRules) -> None:
        self.catalog, self.rules = catalog, rules

    def model(self, model: str = "", language: str = "") -> ServedModel:
        """A name (or tag) and/or an ISO 639-1 language -> the served model (catalog.select; 400 when none)."""
        return self.catalog.select(model, language)

    def decoding(self, name: str, hotwords: str) -> Decoding:
        """A request's `decoding` and `hotwords` fields -> how to decode. Hotwords imply beam search; asking for
        greedy decoding with hotwords is a contradiction (400)."""
        rules = self.rules
        try:
            phrases = parse_hotwords(hotwords, rules.hotword_weight, rules.max_hotwords, rules.max_hotword_words)
        except HotwordError as exc:
            raise BadRequest(str(exc), "hotwords") from None
        if name not in ("", *DECODINGS):
            raise BadRequest(f"decoding must be greedy or beam, not {name!r}", "decoding")
        if phrases and name == "greedy":
            raise BadRequest("hotwords need beam search: leave decoding out or set it to beam", "hotwords")
        beam = bool(phrases) or name == "beam" or (name in ("", "default") and rules.default == "beam")
        return Decoding(beam=True, hotwords=phrases) if beam else GREEDY
