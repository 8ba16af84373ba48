"""Optional dependencies fail with an error that names the pip extra to install."""

import sys

import pytest

from ifsq_hf.utils.import_utils import EXTRAS, is_available, require


def test_require_returns_the_module_when_installed():
    import json

    assert require("json", "train") is json
    assert is_available("json") and not is_available("ifsq_hf_no_such_package")


def test_missing_package_names_the_extra():
    with pytest.raises(ImportError, match=r'pip install "ifsq-hf\[metrics\]"') as info:
        require("ifsq_hf_no_such_package.linalg", "metrics")
    assert "ifsq_hf_no_such_package" in str(info.value) and info.value.name == "ifsq_hf_no_such_package"


def test_broken_install_keeps_its_own_error(tmp_path, monkeypatch):
    """An installed package that fails to import is not reported as missing."""
    (tmp_path / "ifsq_hf_broken_pkg.py").write_text("import ifsq_hf_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ifsq_hf_broken_pkg", raising=False)
    with pytest.raises(ModuleNotFoundError) as info:
        require("ifsq_hf_broken_pkg", "train")
    assert info.value.name == "ifsq_hf_missing_dependency"


def test_unknown_extra_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown extra 'trian'"):
        require("json", "trian")
    assert set(EXTRAS) == {"train", "metrics", "demo"}
