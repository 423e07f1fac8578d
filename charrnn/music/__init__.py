"""ABC folk tunes: the corpus, the checker, MIDI.

folk.py         the offline folk-abc corpus builder and tune-level text helpers
scan.py         a tune's bars as written, measured with ABC's length rules
bars.py         which bars fit the meter (pickups, repeats, unmarked meter changes)
check.py        `abc check`: is each tune well formed and playable; its verdict and MIDI file
midi.py         tune text -> music21 score -> MIDI bytes, music21 never given a path
calibrate.py    `abc calibrate`: real tunes against damaged copies of them
tunes.py        `sample --tunes --valid-only`: drawing until enough tunes pass
"""
