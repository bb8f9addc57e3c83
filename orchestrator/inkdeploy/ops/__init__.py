"""On-call verbs: one module per part of the stack, each reading (or changing) that part from
the controller with short timeouts, so it answers when a host is down, which is when it is used."""


def without_force(problem: str) -> str:
    """A pre-flight problem sentence as an on-call command says it: without the rollout's
    "or pass --force" way out."""
    for tail in (", or pass --force.", " or pass --force."):
        if problem.endswith(tail):
            return problem[: -len(tail)] + "."
    return problem
