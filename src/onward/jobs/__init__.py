"""What onward runs and finds unfinished: one module per kind of job.

Each module wires a pair of endpoints to the engine and a journal: ``api`` (a local copy),
``download``, ``upload`` (tus/IETF), ``tree`` with ``treecopy`` and ``treeentries`` (a
folder), ``s3copy`` and ``s3tree`` (S3), ``unsized`` (a body without a length), ``dryrun``
(what a run would do); ``status`` and ``treestatus`` find and remove unfinished jobs. The CLI
(``onward.cli``) renders what they return; ``onward`` re-exports the public names.
"""
