// Copy buttons: <button data-copy="#element-id"> copies that element's text to the clipboard.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  const done = (text) => { button.textContent = text; setTimeout(() => { button.textContent = label; }, 1500); };
  navigator.clipboard.writeText(source.textContent).then(() => done("Copied"), () => done("Copy failed"));
});
