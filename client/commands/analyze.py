"""bfctl analyze SOURCE: what a source holds, before anything is stored or fetched."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command
from bulkforge.client.commands.plan import check_plan
from bulkforge.client.commands.submit.download import add_source_flags, source_spec
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import analysis_to_dict, print_json
from bulkforge.client.render import print_analysis
from bulkforge.proto.units import MAX_LARGEST


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "analyze", "summarise a source without downloading", run)
    add_source_flags(parser)
    parser.add_argument(
        "--largest",
        type=flags.count(1, MAX_LARGEST),
        default=10,
        metavar="N",
        help="list the N largest files",
    )
    parser.add_argument(
        "--space",
        type=flags.space,
        metavar="BYTES|auto",
        help="one disk's space: also list the files larger than one batch could hold",
    )
    parser.add_argument(
        "--safety-margin",
        type=flags.fraction,
        metavar="M",
        help="share of a disk a batch may fill (0.9)",
    )
    parser.add_argument("--dest", metavar="D", help="the disk --space auto measures")
    parser.set_defaults(check=check_plan, dry_run=True)


def run(args: argparse.Namespace, bfd: Client) -> int:
    source = source_spec(args)
    if args.dest:
        source.dest = args.dest
    response = bfd.analyze(
        source,
        largest=args.largest,
        space=args.space or "",
        safety_margin=args.safety_margin,
        timeout=call_timeout(args, default=None),
    )
    if args.json:
        print_json(analysis_to_dict(response))
    else:
        print_analysis(response)
    return 0
