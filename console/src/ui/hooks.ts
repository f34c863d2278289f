import { createContext } from "preact";
import { useContext, useEffect, useReducer } from "preact/hooks";
import type { Store } from "./store";

export const StoreContext = createContext<Store | null>(null);

/** The store, re-rendering the caller on every change. */
export function useStore(): Store {
  const store = useContext(StoreContext);
  if (!store) throw new Error("no store");
  const [, tick] = useReducer((n: number, _: void) => n + 1, 0);
  useEffect(() => store.subscribe(() => tick()), [store]);
  return store;
}
