"""``inkdeploy lab``: plain Debian 12 hosts on one machine, booted with systemd-nspawn."""
