import subprocess
import sys

import pytest

from policies.block_hash import block_hashes, extra_key


def test_only_full_blocks_are_hashed():
    assert len(block_hashes(list(range(47)), block_size=16)) == 2
    assert block_hashes(list(range(15)), block_size=16) == []


def test_chain_depends_on_every_earlier_block():
    a = block_hashes([1] * 16 + [2] * 16, 16)
    b = block_hashes([3] * 16 + [2] * 16, 16)
    assert a[1] != b[1]
    assert block_hashes([1] * 16 + [9] * 16, 16)[0] == a[0]


def test_extra_separates_models_and_salts():
    toks = list(range(32))
    plain = block_hashes(toks, 16, extra_key("m"))
    assert plain != block_hashes(toks, 16, extra_key("other"))
    assert plain != block_hashes(toks, 16, extra_key("m", "tenant-a"))
    assert block_hashes(toks, 16, extra_key("m", "")) == plain


def test_stable_across_processes():
    code = "from policies.block_hash import block_hashes;print(block_hashes(list(range(64)), 16))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={}
    )
    assert out.stdout.strip() == str(block_hashes(list(range(64)), 16))


def test_bad_block_size():
    with pytest.raises(ValueError):
        block_hashes([1, 2], 0)
