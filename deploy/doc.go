// Package deploy carries no code: it is the home of directord's deployment
// files and of the tests that run them. ansible/ holds the director and
// realserver roles with a playbook and an example inventory for a pair,
// systemd/ the daemon's unit, examples/ configurations for every forwarding
// method. The unit tier checks the playbook's syntax, lints the roles, runs
// both roles against a temporary root and compares what they write with
// golden files (go test -update rewrites them), and checks every example
// and rendered configuration with `directord check --strict`. The netns tier
// applies the realserver role inside a network namespace and removes it
// again. Ansible comes from Debian's ansible-core and ansible-lint packages
// (scripts/install-deps.sh).
package deploy
