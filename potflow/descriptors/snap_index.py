"""The SNAP bispectrum index, without LAMMPS: how many components, which (j1, j2, j) each is.

LAMMPS's ``compute sna/atom`` orders the components by j1 >= j2, j >= j1 (``bispectrum_triples``);
with ``chemflag 1`` every triple repeats for each ordered element triple.
"""




def num_descriptors(twojmax, chemflag=0, nelements=1):
    """Number of bispectrum components LAMMPS computes (bzeroflag does not change it)."""
    count = 0
    for j1 in range(twojmax + 1):
        for j2 in range(j1 + 1):
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                if j >= j1:
                    count += 1
    return count * (nelements**3 if chemflag else 1)


def bispectrum_triples(twojmax):
    """(j1, j2, j) of each bispectrum component, in LAMMPS's order (twice the angular momenta)."""
    triples = []
    for j1 in range(twojmax + 1):
        for j2 in range(j1 + 1):
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                if j >= j1:
                    triples.append((j1, j2, j))
    return triples


def duplicate_descriptor_sets(twojmax, nelements):
    """Column sets that are one function of the positions with ``chemflag 1``.

    Column ((e1*n + e2)*n + e3) * len(triples) + t is B_{j1 j2 j}^{e1 e2 e3}; swapping the
    element labels of two equal angular momenta leaves it unchanged.
    """
    triples = bispectrum_triples(twojmax)
    nb = len(triples)
    sets = {}
    for e1 in range(nelements):
        for e2 in range(nelements):
            for e3 in range(nelements):
                col_base = ((e1 * nelements + e2) * nelements + e3) * nb
                for t, js in enumerate(triples):
                    labels = [e1, e2, e3]
                    for j in set(js):
                        pos = [p for p in range(3) if js[p] == j]
                        for p, e in zip(pos, sorted(labels[p] for p in pos), strict=True):
                            labels[p] = e
                    sets.setdefault((t, *labels), []).append(col_base + t)
    return sorted(cols for cols in sets.values() if len(cols) > 1)
