import pytest
import torch

from cllm.config import Config, apply_dict, load_preset

SHORT_TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
    "And by opposing end them.\n"
)


@pytest.fixture(autouse=True)
def _single_thread():
    # Tests are small; one thread keeps them deterministic and leaves the other core to pytest-xdist or the OS.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_config(out, **train_overrides) -> Config:
    cfg = Config()
    apply_dict(cfg, load_preset("tiny"), "preset")
    cfg.train.out = str(out)
    cfg.train.progress = False
    cfg.train.threads = 1
    cfg.train.dtype = "float32"  # exactness tests are defined for float32 on CPU
    for k, v in train_overrides.items():
        section = "model" if hasattr(cfg.model, k) else "data" if hasattr(cfg.data, k) else "train"
        setattr(getattr(cfg, section), k, v)
    return cfg.validate()


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SHORT_TEXT * 40, encoding="utf-8")
    return path
