"""The screens of the dftui TUI, one module each. Screens talk to `dftui.client`, never psycopg."""
