"""Self-checks for the exercises: one module per notebook (nb00, nb01, …), one function per exercise.

Every check follows one protocol (see `feedback`): unanswered → what to do; wrong → the likely mistake, never the
answer; `checks.nbNN.hint(k)` → more help, one hint at a time; it never raises, whatever it is given. Importing this
package inside IPython registers the `%%solution` cell magic: solution cells stay hidden on Run All until
`checks.show_solutions()` is called.
"""

from .feedback import register_solution_magic, show_solutions

__all__ = ["show_solutions"]

register_solution_magic()
