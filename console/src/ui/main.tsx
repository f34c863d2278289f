import { render } from "preact";
import { App } from "./app";
import { StoreContext } from "./hooks";
import { Store } from "./store";
import "./styles.css";

const store = new Store();
const root = document.getElementById("app");
if (root) {
  root.textContent = "";
  render(
    <StoreContext.Provider value={store}>
      <App />
    </StoreContext.Provider>,
    root,
  );
}
void store.init();
