"""ACE: SAC with causality-aware entropy and gradient-dormancy-guided soft resets (built on tf_rlnas.algos.sac)."""
