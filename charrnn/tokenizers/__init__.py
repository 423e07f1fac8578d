"""Text <-> token ids.

char.py         the character tokenizer, the Tokenizer protocol, helpers shared by both kinds
subword.py      BPE and unigram tokenizers learned with SentencePiece
factory.py      which tokenizer: fitted to a corpus, or the one a checkpoint describes
"""
