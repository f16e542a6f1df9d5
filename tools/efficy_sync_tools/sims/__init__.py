"""Simulators of Efficy Enterprise and APSIS One: real HTTP servers on loopback."""
