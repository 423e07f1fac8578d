"""Short measurements of this machine that charrnn's automatic choices rest on.

Users own every kind of CPU, so nothing here assumes what one of them does: each choice is
timed on the machine that makes it, for the work it is about, and kept in a small cache so
the next run need not time it again.

- `cache`: recent probes per machine in a JSON file beside the token cache; a probe taken on a
  busy machine is outvoted by quieter ones instead of binding later runs.
- `threads`: how many threads a piece of work runs fastest on (sampling steps, training steps),
  and a tuner that re-chooses when a run's steps slow down because the machine got busy.
- `precision`: fp32 against bf16 (fp16 on GPUs without bf16) for a run's own shape.
"""
