"""Lucene's English analysis, the original Porter stemmer and Lucene's BM25 as written out in Python."""

import math

import numpy as np
import pytest

from ragdistill.benchmarks.webshop.lucene import STOP_WORDS, analyze, tokenize
from ragdistill.benchmarks.webshop.porter import stem
from ragdistill.benchmarks.webshop.search import LENGTH_TABLE, SearchIndex, byte4_to_int, int_to_byte4


@pytest.mark.parametrize("word, expected", [
    ("caresses", "caress"), ("ponies", "poni"), ("cats", "cat"), ("feed", "feed"), ("agreed", "agre"),
    ("plastered", "plaster"), ("motoring", "motor"), ("hopping", "hop"), ("filing", "file"), ("happy", "happi"),
    ("relational", "relat"), ("generalization", "gener"), ("electrical", "electr"), ("adjustable", "adjust"),
    ("controlling", "control"), ("women", "women"), ("shoes", "shoe"),
    # Porter's own code, which Lucene follows, departs from the paper here (Snowball's rendering does not):
    ("possibly", "possibl"), ("technology", "technolog"), ("assembly", "assembl"),
    ("is", "is"), ("us", "us"), ("s", "s"),  # one or two letters: left alone
])
def test_porter_stems(word, expected):
    assert stem(word) == expected


def test_porter_agrees_with_the_papers_algorithm_away_from_its_departures():
    import Stemmer

    paper = Stemmer.Stemmer("porter")  # Snowball's rendering of the 1980 paper
    words = set(
        "relational generalization conditional operators hopefully sensitivities formalize electricity triplicate "
        "hopeful goodness revival allowance inference airliner gyroscopic adjustable defensible irritant "
        "replacement adjustment dependent adoption homologous communism activate angularity homologous effective "
        "bowdlerize probate rate cease controll roll running sized fizzing tanned falling hissing failing filing "
        "conflated troubled sized hopping tanned fizzed failing disabled machines washable stretchy".split())
    for word in sorted(words):
        if len(word) > 2 and "bl" not in word and "log" not in word:
            assert stem(word) == paper.stemWord(word), word


def test_tokenizer_joins_as_lucenes_standard_tokenizer_does():
    text = "Women's T-Shirt, 1,000.50 U.S.A. ab:cd rock'n'roll x100 2pcs a_b 28\" $20 hair/wig non-gmo!!!"
    assert tokenize(text) == ["women's", "t", "shirt", "1,000.50", "u.s.a", "ab:cd", "rock'n'roll", "x100", "2pcs",
                              "a_b", "28", "20", "hair", "wig", "non", "gmo"]
    assert tokenize("a.1 1.a ab:: 1,,2") == ["a", "1", "1", "a", "ab", "1", "2"]
    # Non-ASCII: letters with marks, the typographic apostrophe, fullwidth colon, ideographs, emoji.
    assert tokenize("naïve café·bar John’s note：please 锅巴 ❤️ ★ ✿ 👍🏽") == [
        "naïve", "café·bar", "john’s", "note：please", "锅", "巴", "❤️", "★", "👍🏽"]
    assert tokenize("cafe\u0301 x") == ["cafe\u0301", "x"]  # a combining accent stays with its letter


def test_analysis_drops_possessives_and_stop_words_then_stems():
    assert len(STOP_WORDS) == 33 and "with" in STOP_WORDS and "from" not in STOP_WORDS
    assert analyze("The Women's Shoes are in the box, it's John’s") == ["women", "shoe", "box", "john"]
    assert analyze("of the and") == [] and analyze("   ") == []


def test_length_norms_are_lucenes_one_byte_floats():
    lengths = np.arange(0, 100_000)
    codes = int_to_byte4(lengths)
    assert (codes[:24] == lengths[:24]).all()  # exact below 24
    assert (np.diff(codes.astype(int)) >= 0).all() and (LENGTH_TABLE[codes] <= lengths).all()
    assert [byte4_to_int(int(int_to_byte4(np.array([n]))[0])) for n in (24, 40, 41, 343, 344, 375, 376)] == [
        24, 40, 40, 312, 344, 344, 376]
    assert int(int_to_byte4(np.array([2**31 - 1]))[0]) == 255 and LENGTH_TABLE[255] == 2013265944


def test_bm25_is_lucenes_formula_with_encoded_lengths():
    texts = ["red dress", "red red shoes for running", "blue dress with red dots " + "word " * 62, "green hat"]
    index = SearchIndex.build(texts, ["D1", "D2", "D3", "D4"])
    lengths = [2, 4, 66, 2]  # `for` and `with` are stop words
    avgdl = sum(lengths) / 4
    assert index.lengths.tolist() == lengths

    def bm25(term_df, tf, length, boost=1):
        idf = math.log(1 + (4 - term_df + 0.5) / (term_df + 0.5))
        norm = 0.9 * (1 - 0.4 + 0.4 * float(LENGTH_TABLE[int_to_byte4(np.array([length]))[0]]) / avgdl)
        return boost * idf * tf / (tf + norm)

    scored = dict(index.scored("red dress"))
    assert scored["D1"] == pytest.approx(bm25(3, 1, 2) + bm25(2, 1, 2), rel=1e-6)
    assert scored["D2"] == pytest.approx(bm25(3, 2, 4), rel=1e-6)
    assert scored["D3"] == pytest.approx(bm25(3, 1, 66) + bm25(2, 1, 66), rel=1e-6)  # 66 is stored as 64
    assert "D4" not in scored and index.search("hat") == ["D4"] and index.search("zzz") == []
    # A repeated query word counts as a boost on its term, as pyserini's bag-of-words query does.
    assert dict(index.scored("dress dress"))["D1"] == pytest.approx(bm25(2, 1, 2, boost=2), rel=1e-6)
    # Equal scores go to the smaller id.
    twin = SearchIndex.build(["lamp", "lamp"], ["B2", "B1"])
    assert twin.search("lamp") == ["B1", "B2"]


def test_index_survives_save_and_load(tmp_path):
    index = SearchIndex.build(["red dress", "blue shoes", "red shoes"], ["A", "B", "C"])
    index.save(tmp_path / "index")
    loaded = SearchIndex.load(tmp_path / "index")
    assert loaded.scored("red shoes") == index.scored("red shoes") and loaded.ids == ["A", "B", "C"]
