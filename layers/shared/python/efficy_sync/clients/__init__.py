"""HTTP clients for the two APIs we sit between (Efficy Enterprise, APSIS One)."""
