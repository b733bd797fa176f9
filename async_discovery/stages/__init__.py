"""The stages of one run, each with one job, joined by bounded anyio streams.

    plan ──► jobs ──► list ──► pages ──► decide ──► batches ──► send ──► acceptances
                                                                            │
                                                   commit (changes, cursor, ▼
                                                   conditional write loop) ◄┘

- :mod:`.plan` turns the configuration and the saved cursor into listing jobs (the
  folder discovery listing, or the flat listing of the whole prefix).
- :mod:`.listing` pages through each job's listing and classifies keys with the
  discovery rule; it knows nothing of state. A folder's pages pass its
  :mod:`.gate`, which holds them until the folder's state unit can decide them (a
  shard read by its head waits for the listing's fingerprint, :mod:`.shards`).
- :mod:`.decide` holds the pure decision of one candidate (:func:`~.decide.decide`),
  the :class:`~.decide.Tally` that turns decisions into counters and explain lines, and
  the decider stage that packs messages to send into batches.
- :mod:`.dispatch` holds the decided batches by message group, bounded, until a sender
  takes one (FIFO: a group's next batch only once its previous one is sent, so a group
  keeps listing order while groups go in parallel, and the decider never waits on one
  group).
- :mod:`.send` sends each batch it takes, re-sends ``Failed`` entries, records what SQS
  accepted.
- :mod:`.commit` builds the run's changes and cursor and owns the conditional write.

:class:`~.context.RunContext` is what they share: configuration, counters, the deadline,
what was recorded, and the first fatal error (a typed exception, never a cancellation:
no stage cancels another's in-flight send). :mod:`async_discovery.pipeline` wires them.
"""
