#!/bin/bash
# The tests that depend on the host's cgroup layout, run in the VM of run_in_vm.sh (cgroup v2
# alone; this project's hosts are hybrid, so the normal run covers v1): the process runtime's
# cgroups (limits, OOM, cgroups made ahead; also inside a cgroup namespace whose root holds
# processes, as in a container), runc under the process runtime, the template
# manager's forks into cgroups, the workers' network namespaces on a kernel of Debian's own (its
# modules loaded on demand), and the OCI image workers end to end, where the agent's probe
# picks crun (on a hybrid host it cannot run, and runc is used).
#
#   tests/vm/cgroup2_tests.sh <build dir>     (inside the VM; ctest runs it through run_in_vm.sh)
set -euo pipefail
build="$(cd "$1" && pwd)"
cd "$(dirname "$0")/../.."

# The layout this is about: one cgroup2 hierarchy with the controllers on, no v1 one.
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control
if grep -q ' cgroup ' /proc/mounts; then
  echo "cgroup2_tests: a cgroup v1 hierarchy is mounted: not the layout under test" >&2
  exit 1
fi
export GANTRY_REQUIRE_CGROUP_LIMITS=1
# The CPUs are emulated here: tests too slow for that skip themselves, saying why.
export GANTRY_TEST_CPU_EMULATED=1
"$build/src/agent/process/process_runtime_test"
# Again as an agent in a container with its own cgroup namespace (Docker's default on v2): the
# root it sees is a cgroup that holds processes, its own among them (cgroups.cc: Evacuate).
mkdir -p /sys/fs/cgroup/container
echo $$ > /sys/fs/cgroup/container/cgroup.procs
unshare --cgroup --mount --fork bash -euc '
  umount /sys/fs/cgroup
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  [ "$(cat /proc/self/cgroup)" = "0::/" ] && [ -n "$(cat /sys/fs/cgroup/cgroup.procs)" ]
  "$0" --gtest_filter="CgroupTest.*"' "$build/src/agent/process/process_runtime_test"
echo $$ > /sys/fs/cgroup/cgroup.procs
"$build/src/agent/oci/runtime_spec_test"
# Not the CRIU snapshot tests: CRIU cannot detect this guest kernel's features (unrelated to
# cgroups; snapshots are tested on the host).
"$build/src/agent/template/template_manager_test" --gtest_filter='-*Criu*' 
"$build/src/agent/net/worker_network_test"
cd tests/e2e
GANTRY_BIN="$build/gantry" /usr/bin/python3 -m unittest -v test_images
