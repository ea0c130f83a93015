"""Lucene's English analysis as pyserini indexes and queries by default, in Python.

The chain is Lucene's: StandardTokenizer (Unicode word boundaries, UAX #29) → EnglishPossessiveFilter
(a trailing `'s` goes) → LowerCaseFilter → StopFilter (Lucene's 33 English stop words) → PorterStemFilter
(the original Porter stemmer, see porter.py).

The tokenizer keeps Lucene's rules for joining characters into one token: letters joined by `.`, `'`, `’`
or `:` (`u.s.a`, `rock'n'roll`, `ab:cd`), digits joined by `.`, `,`, `;` or `'` (`1,000.50`), letters and
digits that touch (`x100`, `2pcs`), `_` anywhere inside; everything else (spaces, `-`, `/`, `&`, brackets,
symbols) separates tokens and is dropped. Ideographs and Hiragana are one token per character, Thai-like
scripts one token per run, and emoji sequences are tokens of their own.
"""

from __future__ import annotations

import re

import regex

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split()
)
assert len(STOP_WORDS) == 33

# Every character is reduced to a representative of its word-break class, so that one fast `re` pattern over
# ASCII text (the common case) serves for all text: non-ASCII characters are mapped, once each, through the
# Unicode properties of the `regex` module. Private-use characters stand for the classes ASCII has no member of.
_KATAKANA, _IDEOGRAPH, _SOUTHEAST_ASIAN, _PICTOGRAPH, _EXTEND, _ZWJ, _REGIONAL = (chr(0xE001 + i) for i in range(7))
_CLASSES = (
    (regex.compile(r"[\p{WB=ALetter}\p{WB=Hebrew_Letter}]"), "a"),
    (regex.compile(r"\p{WB=Numeric}"), "0"),
    (regex.compile(r"\p{WB=MidLetter}"), ":"),
    (regex.compile(r"\p{WB=MidNum}"), ","),
    (regex.compile(r"\p{WB=MidNumLet}"), "."),
    (regex.compile(r"\p{WB=ExtendNumLet}"), "_"),
    (regex.compile(r"\p{WB=Katakana}"), _KATAKANA),
    (regex.compile(r"[\p{Script=Han}\p{Script=Hiragana}]"), _IDEOGRAPH),
    (regex.compile(r"\p{LB=SA}"), _SOUTHEAST_ASIAN),
    (regex.compile(r"\p{WB=ZWJ}"), _ZWJ),
    (regex.compile(r"\p{Regional_Indicator}"), _REGIONAL),
    (regex.compile(r"[\p{WB=Extend}\p{WB=Format}]"), _EXTEND),
    (regex.compile(r"[\p{Extended_Pictographic}\p{Emoji_Presentation}]"), _PICTOGRAPH),
)

# Extended_Pictographic as Unicode 11-15 defined it, which Lucene's emoji rule was generated from: broader than
# today's (★ U+2605, ☞ U+261E and ♡ U+2661 were in, so Lucene makes each a token and counts it in the length).
_OLD_PICTOGRAPHIC = tuple(
    tuple(int(x, 16) for x in (span.split("..") if ".." in span else (span, span)))
    for span in """
    00A9 00AE 203C 2049 2122 2139 2194..2199 21A9..21AA 231A..231B 2328 2388 23CF 23E9..23F3 23F8..23FA 24C2
    25AA..25AB 25B6 25C0 25FB..25FE 2600..2605 2607..2612 2614..2685 2690..2705 2708..2712 2714 2716 271D 2721
    2728 2733..2734 2744 2747 274C 274E 2753..2755 2757 2763..2767 2795..2797 27A1 27B0 27BF 2934..2935
    2B05..2B07 2B1B..2B1C 2B50 2B55 3030 303D 3297 3299 1F000..1F0FF 1F10D..1F10F 1F12F 1F16C..1F171
    1F17E..1F17F 1F18E 1F191..1F19A 1F1AD..1F1E5 1F201..1F20F 1F21A 1F22F 1F232..1F23A 1F23C..1F23F
    1F249..1F3FA 1F400..1F53D 1F546..1F64F 1F680..1F6FF 1F774..1F77F 1F7D5..1F7FF 1F80C..1F80F 1F848..1F84F
    1F85A..1F85F 1F888..1F88F 1F8AE..1F8FF 1F90C..1F93A 1F93C..1F945 1F947..1FAFF 1FC00..1FFFD
    """.split()
)


class _ClassMap(dict):
    """Code point → its class representative, for str.translate; filled the first time a character is seen."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        rep = next((r for pattern, r in _CLASSES if pattern.match(char)), " ")
        if rep == " " and any(lo <= code <= hi for lo, hi in _OLD_PICTOGRAPHIC):
            rep = _PICTOGRAPH
        self[code] = rep
        return rep


_CLASS_MAP = _ClassMap((code, chr(code)) for code in range(128))  # ASCII stands for itself


def _token_pattern(x: str) -> re.Pattern:
    """The token grammar over class representatives, `x` being what may follow any character and attach to it.

    Lucene's StandardTokenizer rules for words, numbers, Katakana, ideographs, South-East Asian runs and emoji;
    in text with marks, format characters or ZWJ, those attach to what precedes them (UAX #29 rule WB4).
    """
    let, dig = (f"(?:[a-z]{x})+", f"(?:[0-9]{x})+") if x else ("[a-z]+", "[0-9]+")
    part = f"(?:{let}(?:[:.']{x}{let})*|{dig}(?:[,.;']{x}{dig})*)"
    join = f"_{x}"
    kata = f"{_KATAKANA}{x}(?:(?:{join})*{_KATAKANA}{x})*"
    run = f"(?:{kata}|(?:{part})+)"
    word = f"(?:{join})*{run}(?:(?:{join})+{run})*(?:{join})*"
    emoji = (f"{_REGIONAL}{x}{_REGIONAL}{x}"
             f"|{_PICTOGRAPH}{_EXTEND}*(?:{_ZWJ}+{_EXTEND}*{_PICTOGRAPH}{_EXTEND}*)*{x}")
    return re.compile(f"{word}|{_IDEOGRAPH}{x}|(?:{_SOUTHEAST_ASIAN}{x})+|{emoji}")


# Text with nothing to attach (all ASCII text, most other text) is matched without the option, several times faster.
_ASCII_TOKEN = _token_pattern("")
_TOKEN = _token_pattern(f"[{_EXTEND}{_ZWJ}]*")

_POSSESSIVE = ("'s", "\u2019s", "\uff07s")


def tokenize(text: str) -> list[str]:
    """The lower-cased tokens of StandardTokenizer + LowerCaseFilter, stop words and possessives kept."""
    lowered = text.lower()
    if lowered.isascii():
        return _ASCII_TOKEN.findall(lowered)
    classes = lowered.translate(_CLASS_MAP)  # one character for one, so spans carry over
    pattern = _TOKEN if _EXTEND in classes or _ZWJ in classes else _ASCII_TOKEN
    return [lowered[a:b] for a, b in map(re.Match.span, pattern.finditer(classes))]


class _Terms(dict):
    """Token → index term ('' for a stop word), filled on first sight: each distinct token is analysed once."""

    def __missing__(self, token: str) -> str:
        from ragdistill.benchmarks.webshop.porter import stem

        word = token[:-2] if token.endswith(_POSSESSIVE) else token
        term = "" if word in STOP_WORDS else stem(word)
        self[token] = term
        return term


_TERMS = _Terms()


def analyze(text: str) -> list[str]:
    """Index terms of a text, in order: tokens, possessives dropped, lower case, stop words out, Porter stems."""
    terms = _TERMS
    return [t for t in map(terms.__getitem__, tokenize(text)) if t]


class _TokenIds(dict):
    """Token → term id in `term_ids` (-1 for a stop word), filled on first sight; term_ids grows as terms come."""

    def __init__(self, term_ids: dict[str, int]):
        super().__init__()
        self.term_ids = term_ids

    def __missing__(self, token: str) -> int:
        term = _TERMS[token]
        term_id = self.term_ids.setdefault(term, len(self.term_ids)) if term else -1
        self[token] = term_id
        return term_id


def token_terms(term_ids: dict[str, int]) -> dict[str, int]:
    """A map from raw token to term id for indexing, filling `term_ids` with each new term; -1 for stop words."""
    return _TokenIds(term_ids)
