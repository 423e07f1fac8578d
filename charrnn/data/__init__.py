"""Corpora and the token streams made from them.

tokens.py       reading a corpus, the train/validation split as ids, the id cache
streams.py      TBPTT streams: training windows (in shuffled chunks), validation scored once per id
source_tree.py  a directory read as a corpus (files chosen by content, --include/--exclude)
split.py        what is held out: the tail of a running text, or whole documents
corpora.py      the ready corpora: the catalogue (catalogue.json), the mirror, the builders
"""
