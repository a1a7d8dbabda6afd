"""The end of every run: results.json and the model card into output_dir, then the push when one was asked for."""

import logging

from shared.card import CardDetails, write_model_card
from shared.hub import PUSH_IGNORE, HubTarget, push_folder
from shared.results import model_reference, write_results

logger = logging.getLogger(__name__)


def publish(
    output_dir: str,
    results: dict,
    target: HubTarget | None,
    *,
    method_summary: str,
    details: CardDetails,
    library_name: str = "transformers",
    ignore_patterns: list[str] = PUSH_IGNORE,
) -> str:
    """Write results.json and README.md next to the saved model and push the folder to `target` if given.

    Returns where the model can be loaded from: the Hub repo id, or output_dir for a local-only run.
    """
    location = target.repo_id if target else output_dir
    write_results(output_dir, results)
    # A local run's card names its folder by name: a path of this machine means nothing where the card is read.
    write_model_card(
        output_dir,
        results,
        repo_id=target.repo_id if target else model_reference(output_dir)[0],
        method_summary=method_summary,
        details=details,
        library_name=library_name,
    )
    if target:
        message = f"{results['method']}: {results['base_model']} on {results['dataset']}"
        push_folder(output_dir, target, commit_message=message, ignore_patterns=ignore_patterns)
    logger.info("model, card and results are in %s", output_dir)
    return location
