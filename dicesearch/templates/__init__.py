"""Templates of files that dicesearch commands write (string.Template, ${name} placeholders)."""
