# Installed files besides the programs: sample configuration, systemd units,
# system users, manual pages.
