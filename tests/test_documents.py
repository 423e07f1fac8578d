"""Whole documents from the sampler (charrnn.documents): cut at blank lines, filtered, renumbered."""

from __future__ import annotations

import charrnn.documents as documents


def test_generate_documents_keeps_whole_tunes_and_renumbers(monkeypatch):
    stream = ["\n\n", "X:7\nT:A\nK:C\nCD", "EF|\n\nT:no header\n\n", "X:9\nT:", "B\nK:G\n" + "G" * 50, "\n\n"]
    stream += ["\n\nX:3\nT:C\nK:D\nd|\n\nX:4\nT:D\nK:D\nd|\n\n"]
    monkeypatch.setattr(documents, "generate", lambda *a, **k: (piece for piece in stream))
    tokenizer = type("T", (), {"unknown_chars": lambda self, text: []})()
    docs = list(documents.generate_documents(None, tokenizer, 2, start="X:", renumber="X:", max_chars=40))
    # The headerless document and the one longer than 40 characters are dropped.
    assert docs == ["X:1\nT:A\nK:C\nCDEF|", "X:2\nT:C\nK:D\nd|"]
