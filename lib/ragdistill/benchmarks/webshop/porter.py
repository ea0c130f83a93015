"""The original Porter stemmer (Porter, 1980) as Lucene's PorterStemFilter applies it.

Lucene's stemmer follows Martin Porter's own reference implementation, which departs from the paper in two
rules of step 2 (`-bli` → `-ble` instead of `-abli` → `-able`, and an added `-logi` → `-log`) and leaves words
of one or two letters alone. Snowball's `english` (Porter2) and the Snowball rendering of the paper
(PyStemmer's `porter`) both differ from it on those words, which is why the algorithm is written out here.
"""

from __future__ import annotations

_VOWELS = frozenset("aeiou")


class _Word:
    """One word being stemmed: the letters b[0..k] and the end j of the stem that a suffix test found."""

    __slots__ = ("b", "k", "j")

    def __init__(self, word: str):
        self.b = list(word)
        self.k = len(word) - 1
        self.j = 0

    def cons(self, i: int) -> bool:
        """Is b[i] a consonant? `y` is one at the start and after a vowel."""
        c = self.b[i]
        if c in _VOWELS:
            return False
        if c == "y":
            return True if i == 0 else not self.cons(i - 1)
        return True

    def m(self) -> int:
        """The measure of b[0..j]: how many vowel-consonant sequences it holds."""
        n, i, j = 0, 0, self.j
        while True:
            if i > j:
                return n
            if not self.cons(i):
                break
            i += 1
        i += 1
        while True:
            while True:
                if i > j:
                    return n
                if self.cons(i):
                    break
                i += 1
            i += 1
            n += 1
            while True:
                if i > j:
                    return n
                if not self.cons(i):
                    break
                i += 1
            i += 1

    def vowel_in_stem(self) -> bool:
        return any(not self.cons(i) for i in range(self.j + 1))

    def double_c(self, i: int) -> bool:
        return i >= 1 and self.b[i] == self.b[i - 1] and self.cons(i)

    def cvc(self, i: int) -> bool:
        """Consonant-vowel-consonant ending at i, the last not w, x or y (as in hop(e), not snow)."""
        if i < 2 or not self.cons(i) or self.cons(i - 1) or not self.cons(i - 2):
            return False
        return self.b[i] not in "wxy"

    def ends(self, s: str) -> bool:
        n = len(s)
        if n > self.k + 1 or "".join(self.b[self.k - n + 1 : self.k + 1]) != s:
            return False
        self.j = self.k - n
        return True

    def set_to(self, s: str) -> None:
        self.b[self.j + 1 :] = list(s)
        self.k = self.j + len(s)

    def r(self, s: str) -> None:
        if self.m() > 0:
            self.set_to(s)

    def text(self) -> str:
        return "".join(self.b[: self.k + 1])


def _step1ab(w: _Word) -> None:
    """Plurals and -ed / -ing (the paper's steps 1a and 1b)."""
    if w.b[w.k] == "s":
        if w.ends("sses"):
            w.k -= 2
        elif w.ends("ies"):
            w.set_to("i")
        elif w.b[w.k - 1] != "s":
            w.k -= 1
    if w.ends("eed"):
        if w.m() > 0:
            w.k -= 1
    elif (w.ends("ed") or w.ends("ing")) and w.vowel_in_stem():
        w.k = w.j  # j == k from here on, until a suffix test below matches
        if w.ends("at"):
            w.set_to("ate")
        elif w.ends("bl"):
            w.set_to("ble")
        elif w.ends("iz"):
            w.set_to("ize")
        elif w.double_c(w.k):
            if w.b[w.k] not in "lsz":
                w.k -= 1
        elif w.m() == 1 and w.cvc(w.k):
            w.set_to("e")


def _step1c(w: _Word) -> None:
    """Terminal y → i when the stem has a vowel."""
    if w.ends("y") and w.vowel_in_stem():
        w.b[w.k] = "i"


# Step 2 (double suffixes) is keyed by the penultimate letter, step 3 by the last, as in the reference code.
_STEP2 = {
    "a": (("ational", "ate"), ("tional", "tion")),
    "c": (("enci", "ence"), ("anci", "ance")),
    "e": (("izer", "ize"),),
    "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
    "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
    "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
    "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
    "g": (("logi", "log"),),
}
_STEP3 = {
    "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
    "i": (("iciti", "ic"),),
    "l": (("ical", "ic"), ("ful", "")),
    "s": (("ness", ""),),
}
_STEP4 = {
    "a": ("al",),
    "c": ("ance", "ence"),
    "e": ("er",),
    "i": ("ic",),
    "l": ("able", "ible"),
    "n": ("ant", "ement", "ment", "ent"),
    "o": ("ion", "ou"),
    "s": ("ism",),
    "t": ("ate", "iti"),
    "u": ("ous",),
    "v": ("ive",),
    "z": ("ize",),
}


def _replace_by_table(w: _Word, table: dict, key_back: int) -> None:
    """Try the suffixes filed under the letter `key_back` places from the end; the first that ends the word wins."""
    if w.k < key_back:
        return
    for suffix, replacement in table.get(w.b[w.k - key_back], ()):
        if w.ends(suffix):
            w.r(replacement)
            return


def _step4(w: _Word) -> None:
    """-ant, -ence, -ize, ... removed when the measure of what is left is above 1."""
    if w.k == 0:
        return
    for suffix in _STEP4.get(w.b[w.k - 1], ()):
        if w.ends(suffix):
            # -ion only goes after s or t.
            if suffix == "ion" and not (w.j >= 0 and w.b[w.j] in "st"):
                continue
            break
    else:
        return
    if w.m() > 1:
        w.k = w.j


def _step5(w: _Word) -> None:
    """A final -e removed, and -ll reduced to -l, on long enough stems."""
    w.j = w.k
    if w.b[w.k] == "e":
        a = w.m()
        if a > 1 or (a == 1 and not w.cvc(w.k - 1)):
            w.k -= 1
    # j still marks the old end: the measure below counts the removed e, as the reference code does.
    if w.b[w.k] == "l" and w.double_c(w.k) and w.m() > 1:
        w.k -= 1


def stem(word: str) -> str:
    """The Porter stem of a lower-case word; words of one or two letters are returned unchanged."""
    if len(word) <= 2:
        return word
    w = _Word(word)
    _step1ab(w)
    _step1c(w)
    _replace_by_table(w, _STEP2, 1)
    _replace_by_table(w, _STEP3, 0)
    _step4(w)
    _step5(w)
    return w.text()
