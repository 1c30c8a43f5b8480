"""Solutions to the exercises of 06_bpe.ipynb."""


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2  # both halves are used up: "aaa" with (a, a) gives [new, a]
        else:
            out.append(ids[i])
            i += 1
    return out


SOLUTIONS = {"check_merge": merge}
