"""kdna._tables: the one way kdna writes a Markdown table."""

import pytest

from kdna._tables import markdown_row, markdown_table


def test_a_table_has_its_header_rule_and_rows_aligned_as_asked():
    table = markdown_table(["name", "count"], [["a", 1], ["b", "2,000"]], "lr")
    assert table == "| name | count |\n|---|---:|\n| a | 1 |\n| b | 2,000 |"
    assert markdown_table(["x"], []) == "| x |\n|---|"


def test_empty_cells_are_written_as_nothing_between_pipes():
    assert markdown_row(["method", "why", "", "", ""]) == "| method | why ||||"
    assert markdown_row(["a", "", "b"]) == "| a || b |"


@pytest.mark.parametrize("align", ["l", "lc", "lrr"])
def test_an_alignment_per_column_is_required(align):
    with pytest.raises(ValueError, match="align must give 'l' or 'r' for each of the 2 columns"):
        markdown_table(["a", "b"], [], align)
