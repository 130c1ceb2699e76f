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
