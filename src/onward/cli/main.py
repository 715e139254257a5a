"""``onward`` entry point: the parser, verb dispatch, and the one place errors become exit codes.

Imports are lazy so that ``onward --version`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from .._version import __version__
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, OnwardError


def terminal_columns() -> int:
    """What ``shutil.get_terminal_size`` says, without importing shutil for it: argparse does
    that for every argument it is given when it is not told the width (start-up time:
    docs/PERFORMANCE.md)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (OSError, ValueError):
            columns = 0
    return columns or 80


class Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2; with ``intermixed``, options may
    also come between positional arguments (``copy SRC --verify none DST``), as cp and rsync
    take them, and ``--`` ends the options: what follows it is operands, even ``-name``
    (argparse's intermixed parsing would otherwise read it as an unknown option)."""

    intermixed = False
    operands = "paths"  # with intermixed: the destination of the operands after "--"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)
        self._mixing = False
        self.verb_parsers: dict[str, Parser] = {}  # the top-level parser's verbs, by name

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if not self.intermixed or self._mixing:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        rest: list[str] = []
        if "--" in args:
            cut = args.index("--")
            args, rest = args[:cut], args[cut + 1 :]
        self._mixing = True  # parse_known_intermixed_args parses in two passes through this method
        try:
            namespace, extra = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False
        setattr(namespace, self.operands, [*getattr(namespace, self.operands), *rest])
        return namespace, extra

    def error(self, message: str) -> NoReturn:
        # "onward:" like every other error line, whichever verb's parser found it.
        sys.stderr.write(f"onward: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


class RuleAction(argparse.Action):
    """--exclude, --include, --exclude-from, --include-from and --filter, gathered into one
    list of rules in the order given: with rsync's rules the first match decides."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any, flag: Any = None
    ) -> None:
        from ..core.filters import compile_rule, parse_rule, read_rules

        rules = [*getattr(namespace, self.dest, [])]
        try:
            if self.const in ("-", "+"):
                rules.append(compile_rule(self.const == "+", value))
            elif self.const == "rule":
                rules.append(parse_rule(value))
            else:
                with open(value, encoding="utf-8", errors="surrogateescape") as lines:
                    rules += read_rules(lines, include=self.const == "+from")
        except ValueError as exc:
            parser.error(f"{flag}: {exc}")
        except OSError as exc:
            parser.error(f"{flag}: {value}: {exc.strerror}")
        setattr(namespace, self.dest, rules)


def build_parser(only: str | None = None) -> Parser:
    """The whole command line, or with ``only`` a verb's own arguments and no other verb's:
    building the parsers of the verbs not run was a good share of a small copy's start-up
    (docs/PERFORMANCE.md)."""
    parser = Parser(
        prog="onward",
        description="Copy big files so that an interruption costs only the bytes in flight: "
        "re-run the same command and it resumes.",
        epilog="exit codes: 0 done, 1 failed, 2 usage error, 23 some entries of a tree failed (the rest "
        "is copied), 130 interrupted (re-run to resume)",
    )
    parser.add_argument("--version", action="version", version=f"onward {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=Parser)
    for name, add in VERBS.items():
        if only is None or only == name:
            add(verbs)
    parser.verb_parsers = verbs.choices
    return parser


def add_copy(verbs: Any) -> None:
    cp = verbs.add_parser(
        "copy",
        help="copy files, resuming any unfinished copy to the same destination",
        description="Copy SRC to DST, or several SRC into the directory DST. If a copy to the same "
        "destination was interrupted, continue it from its last checkpoint.",
    )
    cp.intermixed = True
    cp.add_argument(
        "paths", nargs="*", metavar="SRC [SRC...] DST", help="source file(s) or URL(s), then the destination"
    )
    cp.add_argument("--restart", action="store_true", help="discard any partial copy and start over")
    cp.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="say what would be copied or deleted; write nothing",
    )
    add_tree_options(cp.add_argument_group("directory trees (SRC makes DST/NAME_OF_SRC, SRC/ fills DST)"))
    add_transfer_options(cp)
    add_download_options(cp.add_argument_group("downloads (SRC an http:// or https:// URL)"))
    add_s3_options(
        cp.add_argument_group("S3 (SRC or DST an s3://bucket/key URL; credentials found as the AWS CLI does)")
    )
    cp.add_argument(
        "--preserve",
        metavar="LIST",
        default="",
        help="also keep owner, group, xattrs, acls or all (root keeps owner and group by default)",
    )
    cp.add_argument(
        "--no-preserve",
        metavar="LIST",
        default="",
        help="do not keep these: mode, timestamps, owner, group, ...",
    )
    cp.add_argument("-P", "--progress", action="store_true", help="show progress even when not on a terminal")
    cp.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    cp.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list each file on stdout when it is done",
    )
    cp.add_argument("--json", action="store_true", help="print one JSON object per event on stdout")


def add_tree_options(tree: Any) -> None:
    """``copy -r``: what a tree copy follows, removes, leaves out and compares."""
    tree.add_argument("-r", "--recursive", action="store_true", help="copy directory trees, resumably")
    tree.add_argument("-L", "--dereference", action="store_true", help="with -r: copy what symlinks point to")
    tree.add_argument("--delete", action="store_true", help="with -r: remove what the source does not have")
    for flags, kind, meta, says in (
        (("--exclude",), "-", "PATTERN", "with -r: leave out what PATTERN matches (rsync's rules)"),
        (("--include",), "+", "PATTERN", "with -r: do not leave out what PATTERN matches"),
        (("--exclude-from",), "-from", "FILE", "with -r: --exclude each pattern in FILE, one a line"),
        (("--include-from",), "+from", "FILE", "with -r: --include each pattern in FILE"),
        (("-f", "--filter"), "rule", "RULE", "with -r: '- PATTERN' or '+ PATTERN'"),
    ):
        tree.add_argument(
            *flags, action=RuleAction, const=kind, dest="rules", default=[], metavar=meta, help=says
        )
    tree.add_argument(
        "-c",
        "--checksum",
        dest="compare_content",
        action="store_true",
        help="with -r: judge a file of the same size by its bytes, not by its time (as rsync -c)",
    )


def add_transfer_options(cp: Any) -> None:
    """How every copy checks, checkpoints, retries, paces and writes."""
    cp.add_argument(
        "--verify",
        choices=("none", "fast", "full"),
        default="fast",
        help="fast (default): read each chunk back from the device after the sync that makes it "
        "durable, and re-check the last chunks on resume; full: also re-read the source and the "
        "whole copy before it takes the final name; none: no read-back (durable, unchecked)",
    )
    cp.add_argument("--chunk-size", metavar="SIZE", help="journal granularity for a new copy (default 4M)")
    cp.add_argument(
        "--checkpoint-bytes",
        metavar="SIZE",
        help="checkpoint at least every SIZE (default 256M for a local file, else 64M)",
    )
    cp.add_argument(
        "--checkpoint-seconds",
        metavar="S",
        type=float,
        help="checkpoint at least every S seconds (default 1)",
    )
    cp.add_argument(
        "--retries",
        metavar="N",
        type=int,
        help="retries of transient I/O and network errors, and of answers that do not fit the file "
        "(default 5; counted again after progress)",
    )
    cp.add_argument(
        "--bwlimit",
        metavar="RATE",
        help="move at most RATE bytes a second, as rsync: a plain number is KiB/s, or 50M, 1G",
    )
    cp.add_argument(
        "--limit-rate", metavar="RATE", help="the same, as curl: a plain number is bytes a second"
    )
    cp.add_argument(
        "--no-sparse",
        dest="sparse",
        action="store_false",
        help="write a local source's holes as zeros (default: keep them holes, as cp and rsync -S)",
    )
    cp.add_argument(
        "-S", "--sparse", dest="sparse", action="store_true", help="keep holes (the default; as rsync -S)"
    )
    cp.add_argument(
        "--expect-digest",
        metavar="ALG:HEX",
        help="the finished copy must have this sha256, sha512, sha1 or md5 digest",
    )


def add_download_options(web: Any) -> None:
    web.add_argument("--connections", metavar="N", type=int, help="parallel ranged requests (default 1)")
    web.add_argument("--timeout", metavar="S", type=float, help="seconds to connect or to wait for data (30)")
    web.add_argument(
        "-H", "--header", metavar="'NAME: VALUE'", action="append", default=[], help="add a request header"
    )
    web.add_argument(
        "--content-disposition",
        action="store_true",
        help="into a directory: name the file as the server's Content-Disposition suggests (a plain "
        "name, never replacing a file already there)",
    )
    web.add_argument(
        "--allow-hidden", action="store_true", help="with --content-disposition: accept a dot-file name"
    )


def add_s3_options(s3: Any) -> None:
    s3.add_argument("--part-size", metavar="SIZE", help="multipart part size for a new upload (default 8M)")
    s3.add_argument(
        "--checksum-algorithm",
        choices=("crc32c", "crc32", "sha256", "sha1"),
        help="checksum sent with every part (default crc32c)",
    )
    for flag, meta, says in (
        ("--profile", "NAME", "a profile of ~/.aws/config and credentials"),
        ("--endpoint-url", "URL", "an S3-compatible store (path-style addressing)"),
        ("--region", "REGION", "the bucket's region"),
    ):
        s3.add_argument(flag, metavar=meta, help=says)


def add_status(verbs: Any) -> None:
    st = verbs.add_parser(
        "status", help="list unfinished copies", description="List unfinished copies at or below PATH."
    )
    st.add_argument("path", nargs="?", default=".", metavar="PATH")
    st.add_argument("--json", action="store_true", help="one JSON object per unfinished copy")


def add_clean(verbs: Any) -> None:
    cl = verbs.add_parser(
        "clean",
        help="remove abandoned partial copies and journals",
        description="Remove the partial copies and journals of unfinished copies at or below PATH.",
    )
    cl.add_argument("path", nargs="?", default=".", metavar="PATH")
    cl.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    cl.add_argument("--json", action="store_true", help="one JSON object per removed copy")


def add_serve(verbs: Any) -> None:
    from . import serve

    serve.add_parser(verbs)


VERBS: dict[str, Callable[[Any], None]] = {
    "copy": add_copy,
    "status": add_status,
    "clean": add_clean,
    "serve": add_serve,
}


DIGEST = re.compile(r"(sha256|sha512|sha1|md5):[0-9a-fA-F]+")


def legacy_checksum(argv: list[str]) -> list[str]:
    """``--checksum ALG:HEX`` as onward spelt ``--expect-digest`` before ``-c/--checksum`` took
    rsync's meaning: rewritten, with a notice. A value is recognised by its form (``sha256:`` and
    hex digits), so ``-c DIR/ DST`` keeps its operands."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            out += [arg, *args]
            break
        value = arg.partition("=")[2] if arg.startswith("--checksum=") else None
        if arg == "--checksum":
            following = next(args, None)
            if following is not None and DIGEST.fullmatch(following):
                value = following
            else:
                out += [arg] if following is None else [arg, following]
                continue
        if value is None:
            out.append(arg)
            continue
        sys.stderr.write(
            "onward: --checksum ALG:HEX is now --expect-digest ALG:HEX (-c/--checksum compares trees "
            "by content, as rsync -c); taken as --expect-digest this time\n"
        )
        out += ["--expect-digest", value]
    return out


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "copy":
        argv = legacy_checksum(argv)
    parser = build_parser(argv[0] if argv and argv[0] in VERBS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the verb's own parser, so the hint is "see 'onward copy --help'"
        parser.verb_parsers.get(args.verb, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.verb is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Names that are not UTF-8 are str with surrogate escapes ("\udce9" stands for the byte
        # 0xE9; os.fsencode gives the exact bytes back). Whatever the locale, they go out as
        # that escape (JSON lines stay valid UTF-8 and decode back to the same str), never as
        # a UnicodeEncodeError. Text for people shows them as "\xe9" (endpoints.localtree.display).
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        if args.verb == "copy":
            from . import copy

            return copy.main(args)
        if args.verb == "status":
            from . import status

            return status.main(args)
        if args.verb == "serve":
            from . import serve

            return serve.main(args)
        from . import clean

        return clean.main(args)
    except OnwardError as exc:
        from .render import report_error

        report_error(exc, json_mode=getattr(args, "json", False))
        return exc.exit_code
    except KeyboardInterrupt:
        if args.verb == "serve":  # nothing to resume: uploads in flight are resumed by their clients
            sys.stderr.write("onward: serve: stopped; unfinished uploads are kept for their clients\n")
        else:
            sys.stderr.write("onward: interrupted; run the same command again to resume\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED
