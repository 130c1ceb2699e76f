import pytest
import torch

# Tests run many tiny tensor ops; two threads contend more than they help on small CI machines.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/render/golden/* from the current output",
    )


@pytest.fixture(autouse=True, scope="session")
def every_json_report_matches_the_schema():
    """Each JSON report that a test renders (CLI or API, one model or several) is parsed strictly and
    validated against docs/report.schema.json as it is made: a report that breaks the schema makes
    its command fail (an internal error, exit 2), and so its test."""
    from lipaudit.render import collection
    from lipaudit.report import Report
    from tests.report_schema import check_report_text

    to_json, render_many = Report.to_json, collection.render_json_collection

    def checked_to_json(self: Report) -> str:
        text = to_json(self)
        check_report_text(text)
        return text

    def checked_collection(runs: list) -> str:
        text = render_many(runs)
        check_report_text(text)
        return text

    Report.to_json = checked_to_json  # type: ignore[method-assign]
    collection.render_json_collection = checked_collection
    yield
    Report.to_json = to_json  # type: ignore[method-assign]
    collection.render_json_collection = render_many
