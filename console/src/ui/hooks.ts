import { createContext } from "preact";
import { useContext, useEffect, useReducer } from "preact/hooks";
import type { Store } from "./store";

export const StoreContext = createContext<Store | null>(null);

/** The store, re-rendering the caller on every change. */
export function useStore(): Store {
  const store = useContext(StoreContext);
  if (!store) throw new Error("no store");
  const [, tick] = useReducer((n: number, _: void) => n + 1, 0);
  const renderedAt = store.rev;
  useEffect(() => {
    const off = store.subscribe(() => tick());
    // a change between this render and the subscription (effects run after paint)
    if (store.rev !== renderedAt) tick();
    return off;
  }, [store]);
  return store;
}
