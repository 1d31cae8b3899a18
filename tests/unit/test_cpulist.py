import pytest

from llmhost.cpulist import cpumask_hex, format_cpulist, parse_cpulist


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("", ()),
        ("0", (0,)),
        ("0-3", (0, 1, 2, 3)),
        ("1-4,8-15,17-20", (1, 2, 3, 4, *range(8, 16), 17, 18, 19, 20)),
        ("managed_irq,domain,2-3", (2, 3)),
        ("0-8:4", (0, 4, 8)),
        ("3,1\n", (1, 3)),
    ],
)
def test_parse(text, cpus):
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize(
    ("cpus", "text"), [((), ""), ((0,), "0"), ((0, 1, 2, 5, 7, 8), "0-2,5,7-8"), ((3, 1), "1,3")]
)
def test_format(cpus, text):
    assert format_cpulist(cpus) == text
    assert parse_cpulist(text) == tuple(sorted(cpus))


def test_mask():
    assert cpumask_hex([1]) == "2"
    assert cpumask_hex(range(8, 16)) == "ff00"
