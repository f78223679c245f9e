"""Figure builders return titled figures with the traces they promise."""

import pytest
import torch

from kdna import ParentKernel
from kdna.viz import kernel_family


def test_kernel_family_has_one_heatmap_per_filter_and_kernel():
    torch.manual_seed(0)
    parent = ParentKernel(4, 6, 3)
    children = [parent.child() for _ in range(3)]
    with torch.no_grad():
        children[1].filter_scale[1] = 1.0  # child 2 doubles filter 1
    fig = kernel_family(parent, children, filters=(0, 1))
    assert len(fig.data) == 2 * 4
    assert all(t.type == "heatmap" for t in fig.data)
    assert "parent kernel" in fig.layout.title.text
    assert fig.layout.xaxis5.title.text == "kernel column"
    assert fig.layout.yaxis.title.text == "kernel row"
    names = [a.text for a in fig.layout.annotations]
    assert {"parent", "child 1", "child 3", "filter 0"} <= set(names)
    by_name = {t.name: torch.tensor(t.z) for t in fig.data}
    torch.testing.assert_close(by_name["child 2, filter 1"], 2 * by_name["parent, filter 1"])


def test_kernel_family_rejects_strangers_and_bad_indices():
    parent = ParentKernel(4, 6, 3)
    stranger = ParentKernel(4, 6, 3).child()
    with pytest.raises(ValueError, match="child 1 is not a child"):
        kernel_family(parent, [stranger])
    with pytest.raises(ValueError, match=r"filters \[7\] must lie in \[0, 6\)"):
        kernel_family(parent, [parent.child()], filters=(7,))
