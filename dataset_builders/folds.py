"""Subject-exclusive folds: the standard BP4D and DISFA parts (EAC-Net, JAA-Net, ME-GraphAU) and the package's
rule for BP4D+.

Fold k of BP4D/DISFA tests on one part and trains on the other two: fold1 tests part3, fold2 tests part2, fold3
tests part1.
"""

BP4D_PARTS: tuple[tuple[str, ...], ...] = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016", "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020", "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015", "F014"),
)

DISFA_PARTS: tuple[tuple[str, ...], ...] = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)

#: fold number -> index of the part it tests on.
THREE_FOLD_TEST_PART = {1: 2, 2: 1, 3: 0}


def three_fold_split(parts: tuple[tuple[str, ...], ...], fold: int) -> dict[str, tuple[str, ...]]:
    """`{"train": subjects, "test": subjects}` of fold 1, 2 or 3 over three standard parts."""
    if fold not in THREE_FOLD_TEST_PART:
        raise ValueError(f"fold must be 1, 2 or 3, got {fold}.")
    test_part = THREE_FOLD_TEST_PART[fold]
    train = tuple(s for index, part in enumerate(parts) if index != test_part for s in part)
    return {"train": train, "test": parts[test_part]}


def k_fold_split(subjects: list[str], fold: int, num_folds: int) -> dict[str, tuple[str, ...]]:
    """Subject-exclusive k-fold split: subjects sorted by id and dealt round-robin into `num_folds` parts; fold k
    tests on part k. Deterministic and balanced for any subject list (the package's rule for BP4D+, whose paper
    split is not published as subject lists)."""
    if not 1 <= fold <= num_folds:
        raise ValueError(f"fold must be in 1..{num_folds}, got {fold}.")
    ordered = sorted(set(subjects))
    test = tuple(s for index, s in enumerate(ordered) if index % num_folds == fold - 1)
    return {"train": tuple(s for s in ordered if s not in test), "test": test}
