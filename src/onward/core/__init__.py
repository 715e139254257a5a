"""The pure core: every decision of a transfer, with no I/O, no clock and no threads.

``plan`` says which chunks exist and which remain, ``identity`` whether a source
is still the one a journal was made from, ``journal`` how progress is encoded on
disk, ``lifecycle`` which step a transfer may take next, and ``retry`` whether
and when to try again. The engine asks; the core answers.
"""
