"""`peft-autoconfig push DIR --repo-id ORG/NAME`: a search output, one config folder or one pruned model of a
`prune-model` output to the Hub, one commit."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="Upload a searched front, one PEFT config folder or a pruned model, with a model card, to the Hub.",
        description="Upload DIR (a search output folder with front.json, or a folder with adapter_config.json) to "
        "the Hub as one commit, with a model card. For a `prune-model` output (or one of its point folders), one "
        "pruned model is uploaded as a plain transformers model (--point chooses it; default the best metric). "
        "The token comes from --token, HF_TOKEN or `hf auth login`.",
    )
    parser.add_argument("dir", help="search output folder (front.json, front/<name>/, pareto.png) or a config folder")
    parser.add_argument("--repo-id", required=True, help="target repo, 'org/name' (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private (new repos only)")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing); default main")
    parser.add_argument("--token", default=None, help="Hub token; default HF_TOKEN or the saved login")
    parser.add_argument("--dry-run", metavar="PATH", default=None,
                        help="write exactly the files that would be uploaded to the new folder PATH; no network")
    parser.add_argument("--commit-message", default=None, help="commit title")
    parser.add_argument("--base-model", default=None, help="card `base_model` (a Hub repo id) if front.json has a local path")
    parser.add_argument("--dataset", default=None, help="card `datasets` entry (a Hub dataset id); default the task name")
    parser.add_argument("--license", default=None, help="card license, e.g. apache-2.0")
    parser.add_argument("--endpoint", default=None, help="Hub URL; default HF_ENDPOINT or https://huggingface.co")
    parser.add_argument("--point", default=None, help="prune-model outputs: the front point to push (e.g. p03)")
    parser.add_argument("--retrained", action="store_true",
                        help="prune-model outputs: push the point's re-trained model (recipe `retrain:`)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import HubError, push_to_hub
    from ..hub.pruned import is_prune_output, push_pruned_model

    common = dict(private=args.private, revision=args.revision, token=args.token, dry_run=args.dry_run,
                  commit_message=args.commit_message, base_model=args.base_model, dataset=args.dataset,
                  license=args.license, endpoint=args.endpoint)
    try:
        if is_prune_output(args.dir):
            result = push_pruned_model(args.dir, args.repo_id, point=args.point, retrained=args.retrained, **common)
        elif args.point is not None or args.retrained:
            raise ValueError(f"`--point`/`--retrained` apply to prune-model outputs only; {args.dir} is not one.")
        else:
            result = push_to_hub(args.dir, args.repo_id, **common)
    except (HubError, FileExistsError) as error:
        print(f"peft-autoconfig push: error: {error}", file=sys.stderr)
        return 1
    if result.dry_run_dir:
        print(f"dry run: wrote {len(result.files)} files to {result.dry_run_dir} (nothing uploaded)")
    else:
        print(f"pushed {len(result.files)} files to {result.repo_id} in one commit: {result.commit_url}")
    for path in result.files:
        print(f"  {path}")
    return 0
