"""The examples in the public docstrings run and print what they say (doctest)."""
import doctest

import pytest

from fastsoftmax import _api, _threads


# (_config's one example prints machine-specific output and is skipped.)
@pytest.mark.parametrize("module", [_api, _threads], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
