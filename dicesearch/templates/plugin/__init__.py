"""The package `dicesearch new-plugin` writes: see dicesearch.scaffold."""
