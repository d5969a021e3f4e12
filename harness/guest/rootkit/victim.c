/* nd-victim: the process the lab's test rootkit hides (harness/guest/rootkit/nd_rootkit.c). One
 * thread, sleeping until killed; its comm is its file name, "nd-victim". */
#include <unistd.h>

int main(void) {
    for (;;)
        pause();
}
